"""Which Authorization a request carries: the caller's header, the URL's userinfo, netrc."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import asyncfetch
from asyncfetch import InvalidRequest
from asyncfetch._config import env_settings
from asyncfetch._options import make_options
from asyncfetch._transport.credentials import Credentials, netrc_authorization
from tests.faultserver import FaultServer, make_payload
from tests.helpers import basic, run_cli


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
    ("url", "headers", "expected"),
    [
        ("http://u:p@h/f", {"authorization": "Bearer t"}, "Bearer t"),  # the caller's first
        ("http://u:p@h/f", {}, basic("u:p")),  # then the URL's
        ("http://h/f", {}, basic("n:q")),  # then netrc's
    ],
)
async def test_fast_path_credentials_in_aiohttps_order(
    tmp_path: Path, url: str, headers: dict[str, str], expected: str
) -> None:
    path = tmp_path / "netrc"
    path.write_text("machine h login n password q\n")
    credentials = Credentials(netrc_path=path)

    sent = await credentials.headers(url, headers)

    assert [v for k, v in sent.items() if k.lower() == "authorization"] == [expected]


def _sent(server: FaultServer, name: str) -> set[tuple[str | None, str | None, str | None]]:
    """(Authorization, Cookie, X-Trace) of every request ``server`` got."""
    return {
        (r.headers.get("Authorization"), r.headers.get("Cookie"), r.headers.get("X-Trace"))
        for r in server.requests
        if r.name == name
    }


@pytest.mark.parametrize("fast_path", ["1", "0"])
async def test_the_callers_credentials_go_to_the_origin_asked_only(
    server: FaultServer,
    make_server: Callable[[], FaultServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fast_path: str,
) -> None:
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", fast_path)
    data = make_payload(1 << 20, seed=51)
    mirror = make_server()
    url, other = server.add_file("m.bin", data), mirror.add_file("m.bin", data)
    headers = {"Authorization": "Bearer PRIMARY", "Cookie": "c=1", "X-Trace": "t"}

    result = await asyncfetch.fetch(
        url, tmp_path / "m.bin", mirrors=[other], headers=headers, chunk_size=64 << 10,
        connections=4,
    )  # fmt: skip

    assert result.bytes_by_mirror[other] > 0
    assert _sent(server, "m.bin") == {("Bearer PRIMARY", "c=1", "t")}
    assert _sent(mirror, "m.bin") == {(None, None, "t")}


@pytest.mark.parametrize("fast_path", ["1", "0"])
async def test_mirror_headers_go_to_their_mirror_only(
    server: FaultServer,
    make_server: Callable[[], FaultServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fast_path: str,
) -> None:
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", fast_path)
    data = make_payload(1 << 20, seed=52)
    mirror, third = make_server(), make_server()
    url, other = server.add_file("m.bin", data), mirror.add_file("m.bin", data)
    last = third.add_file("m.bin", data)

    result = await asyncfetch.fetch(
        url, tmp_path / "m.bin", mirrors=[other, last], chunk_size=64 << 10, connections=6,
        headers={"Authorization": "Bearer PRIMARY"},
        mirror_headers={mirror.base_url + "/any/path": {"Authorization": "Bearer MIRROR"}},
    )  # fmt: skip

    assert min(result.bytes_by_mirror.values()) > 0
    assert _sent(server, "m.bin") == {("Bearer PRIMARY", None, None)}
    assert _sent(mirror, "m.bin") == {("Bearer MIRROR", None, None)}
    assert _sent(third, "m.bin") == {(None, None, None)}


def test_the_cli_takes_headers_for_the_url_and_for_each_mirror(
    server: FaultServer, make_server: Callable[[], FaultServer], tmp_path: Path
) -> None:
    data = make_payload(1 << 20, seed=53)
    mirror = make_server()
    url, other = server.add_file("m.bin", data), mirror.add_file("m.bin", data)

    done = run_cli(
        "get", url, "-o", str(tmp_path / "m.bin"), "--mirror", other, "--chunk-size", "64K",
        "--json", "--no-progress", "-H", "Authorization: Bearer PRIMARY", "-H", "Cookie: c=1",
        "--mirror-header", other, "Authorization: Bearer MIRROR",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bytes_by_mirror"][other] > 0
    assert _sent(server, "m.bin") == {("Bearer PRIMARY", "c=1", None)}
    assert _sent(mirror, "m.bin") == {("Bearer MIRROR", None, None)}
    assert "PRIMARY" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "mirror_headers",
    [{"not a url": {"A": "b"}}, {"ftp://h/": {"A": "b"}}, {"http://h/": "Bearer SECRET"}],
)
def test_mirror_headers_that_cannot_work_are_refused_without_showing_them(
    mirror_headers: Any,
) -> None:
    with pytest.raises(InvalidRequest, match="mirror") as caught:
        make_options(mirror_headers=mirror_headers)
    assert "SECRET" not in str(caught.value)
