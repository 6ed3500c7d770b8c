"""check_url: which URLs asyncfetch takes, asked without the HTTP transport."""

from __future__ import annotations

import pytest

from asyncfetch import InvalidRequest
from asyncfetch._urls import check_url
from tests.test_layers import imports_of, unit_of


@pytest.mark.parametrize("url", ["http://host/f.bin", "https://user:pw@host:8443/a/b?x=1"])
def test_an_absolute_http_url_is_taken_as_it_is(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://host/f.bin", "unsupported scheme 'ftp'"),
        ("host/f.bin", "is not a full URL"),
        ("http:///f.bin", "is not a full URL"),
        ("http://host:port/f.bin", "is not a valid URL"),
    ],
)
def test_any_other_url_is_an_invalid_request_naming_it(url: str, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason) as caught:
        check_url(url)
    assert caught.value.url == url


@pytest.mark.parametrize("module", ["_hub.registry", "_batch.manifest", "_urls"])
def test_checking_a_url_imports_no_transport(module: str) -> None:
    inside, outside = imports_of(module)
    assert not {m for m in inside if unit_of(m) == "_transport"}
    assert "aiohttp" not in outside
