"""Which Authorization a request carries: the caller's header, the URL's userinfo, netrc."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncfetch._config import env_settings
from asyncfetch._transport.credentials import Credentials, netrc_authorization
from tests.helpers import basic


@pytest.mark.parametrize(
    ("text", "host", "expected"),
    [
        ("machine h login u password p\n", "h", basic("u:p")),
        ("machine h login u password p\n", "g", None),
        ("machine h login u password p\ndefault login d password q\n", "g", basic("d:q")),
        ("machine h login u\n", "h", basic("u:")),
        ("machine h login u password p\nbogus\n", "h", None),  # no parse: as aiohttp, none
    ],
)
def test_netrc_authorization(tmp_path: Path, text: str, host: str, expected: str | None) -> None:
    path = tmp_path / "netrc"
    path.write_text(text)
    assert netrc_authorization(path, host) == expected


def test_no_netrc_file_means_no_authorization(tmp_path: Path) -> None:
    assert netrc_authorization(tmp_path / "missing", "h") is None
    assert netrc_authorization(None, "h") is None


def test_netrc_is_found_where_aiohttp_looks(tmp_path: Path) -> None:
    assert env_settings({"NETRC": str(tmp_path / "n")}).netrc == tmp_path / "n"
    assert env_settings({}).netrc == Path.home() / ".netrc"


@pytest.mark.parametrize(
    ("url", "headers", "authorized", "expected"),
    [
        ("http://h/f", {"authorization": "Bearer t"}, True, "Bearer t"),  # the caller's first
        ("http://u:p@h/f", {}, False, basic("u:p")),  # then the URL's
        ("http://h/f", {}, False, basic("n:q")),  # then netrc's
        ("http://u:p@h/f", {}, True, basic("n:q")),  # the caller's, kept for its origin
    ],
)
async def test_fast_path_credentials_in_aiohttps_order(
    tmp_path: Path, url: str, headers: dict[str, str], authorized: bool, expected: str
) -> None:
    path = tmp_path / "netrc"
    path.write_text("machine h login n password q\n")
    credentials = Credentials(authorized=authorized, netrc_path=path)

    sent = await credentials.headers(url, headers)

    assert [v for k, v in sent.items() if k.lower() == "authorization"] == [expected]
