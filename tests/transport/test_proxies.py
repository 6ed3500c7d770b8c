"""The proxy choice (asyncfetch._transport.proxies): which variable, and no_proxy, as curl."""

from __future__ import annotations

from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import HTTPStatusError, InvalidRequest, TransportError
from asyncfetch._config import ProxyEnv
from asyncfetch._models import ByteRange
from asyncfetch._options import Options
from asyncfetch._transport.client import Transport
from asyncfetch._transport.proxies import bypassed, proxy_for
from asyncfetch._transport.rawhttp import RawBody, Span
from tests.faultserver import FaultServer
from tests.faultserver.proxy import ForwardProxy
from tests.helpers import basic, no_wait, sha256

P = "http://proxy.test:3128"
CHUNK = 256 << 10


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({}, "http://h.test/f", None),
        ({"http_proxy": P}, "http://h.test/f", P),
        ({"HTTP_PROXY": P}, "http://h.test/f", P),
        ({"http_proxy": P, "HTTP_PROXY": "http://other:1"}, "http://h.test/f", P),
        ({"http_proxy": P}, "https://h.test/f", None),
        ({"https_proxy": P}, "https://h.test/f", P),
        ({"HTTPS_PROXY": P}, "https://h.test/f", P),
        ({"https_proxy": P}, "http://h.test/f", None),
        ({"all_proxy": P}, "http://h.test/f", P),
        ({"ALL_PROXY": P}, "https://h.test/f", P),
        ({"all_proxy": "http://all:1", "https_proxy": P}, "https://h.test/f", P),
        ({"http_proxy": ""}, "http://h.test/f", None),
        ({"http_proxy": "", "all_proxy": P}, "http://h.test/f", P),
        ({"http_proxy": "proxy.test:3128"}, "http://h.test/f", P),
        ({"http_proxy": "u:p@proxy.test:3128"}, "http://h.test/f", "http://u:p@proxy.test:3128"),
        ({"all_proxy": P}, "file:///nfs/w.pth", None),
    ],
)
def test_which_variable(env: dict[str, str], url: str, expected: str | None) -> None:
    assert proxy_for(url, ProxyEnv.read(env)) == expected


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "expected"),
    [
        ("*", "anything.test", 80, True),
        ("", "h.test", 80, False),
        ("example.com", "example.com", 80, True),
        ("example.com", "a.example.com", 80, True),
        ("example.com", "badexample.com", 80, False),
        (".example.com", "example.com", 80, True),
        (".example.com", "a.b.example.com", 80, True),
        ("EXAMPLE.com", "Example.COM", 80, True),
        ("example.com.", "example.com", 80, True),
        ("a.test, example.com", "x.example.com", 80, True),
        ("a.test example.com", "x.example.com", 80, True),
        ("127.0.0.1", "127.0.0.1", 80, True),
        ("127.0.0.1", "127.0.0.2", 80, False),
        ("127.0.0.0/8", "127.1.2.3", 80, True),
        ("10.0.0.0/8", "127.1.2.3", 80, False),
        ("192.168.0.0/16", "192.168.7.7", 443, True),
        ("::1", "::1", 80, True),
        ("[::1]", "[::1]", 80, True),
        ("fd00::/8", "fd12::5", 80, True),
        ("fd00::/8", "fe80::1", 80, False),
        ("127.0.0.0/8", "localhost", 80, False),
        ("localhost", "127.0.0.1", 80, False),
        ("h.test:8080", "h.test", 8080, True),
        ("h.test:8080", "h.test", 80, False),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 9090, False),
        ("127.0.0.1:81", "127.0.0.1", 81, True),
        ("*.test", "h.test", 80, False),  # curl: * only alone
    ],
)
def test_no_proxy(no_proxy: str, host: str, port: int, expected: bool) -> None:
    assert bypassed(host, port, no_proxy) is expected


def test_no_proxy_applies_to_the_choice() -> None:
    env = ProxyEnv.read({"http_proxy": P, "NO_PROXY": "127.0.0.0/8"})
    assert proxy_for("http://127.0.0.1:8000/f", env) is None
    assert proxy_for("http://[::1]:8000/f", env) == P
    assert proxy_for("http://h.test:8000/f", env) == P


def test_a_socks_proxy_is_refused_by_name_without_its_password() -> None:
    env = ProxyEnv.read({"all_proxy": "socks5://user:SECRET@proxy.test:1080"})
    with pytest.raises(InvalidRequest, match="socks5:// proxies are not supported") as caught:
        proxy_for("https://h.test/f", env)
    assert "SECRET" not in str(caught.value)


# Through a real forward proxy on loopback (tests/faultserver/proxy.py).

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable from the test's own environment."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_plain_http_goes_through_http_proxy_with_its_credentials(
    server: FaultServer, payload: bytes, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    url = server.add_file("m.bin", payload)
    with ForwardProxy(auth="pxuser:pxpass") as proxy:
        clean_env.setenv("HTTP_PROXY", proxy.url)
        result = asyncfetch.download(url, tmp_path / "m.bin", connections=4, chunk_size=CHUNK)
    assert (tmp_path / "m.bin").read_bytes() == payload
    assert result.sha256 == sha256(payload)
    gets = [r for r in proxy.requests if r.startswith("GET ")]
    assert len(gets) >= 4
    assert all(r == f"GET {url}" for r in gets)  # absolute form: the proxy forwarded them
    assert set(proxy.authorizations) == {basic("pxuser:pxpass")}


async def test_a_proxied_plain_http_range_keeps_the_fast_path(
    server: FaultServer, payload: bytes, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("ASYNCFETCH_FAST_PATH", "1")
    url = server.add_file("m.bin", payload)
    with ForwardProxy() as proxy:
        clean_env.setenv("http_proxy", proxy.url)
        async with (
            Transport(Options(connections=1)) as transport,
            transport.open(url, ByteRange(0, 10), window=Span(stop=10)) as body,
        ):
            assert isinstance(body, RawBody)
            assert await body.read() == payload[:10]
    assert proxy.requests == [f"GET {url}"]


def test_all_proxy_is_used_when_no_scheme_proxy_is_set(
    server: FaultServer, payload: bytes, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    url = server.add_file("m.bin", payload)
    with ForwardProxy() as proxy:
        clean_env.setenv("ALL_PROXY", proxy.url)
        asyncfetch.download(url, tmp_path / "m.bin", connections=2, chunk_size=CHUNK)
    assert (tmp_path / "m.bin").read_bytes() == payload
    assert any(r.startswith("GET ") for r in proxy.requests)


@pytest.mark.parametrize("no_proxy", ["127.0.0.0/8", "127.0.0.1", "*"])
def test_no_proxy_cidr_sends_requests_direct(
    server: FaultServer, payload: bytes, tmp_path: Path, clean_env: pytest.MonkeyPatch,
    no_proxy: str,
) -> None:  # fmt: skip
    url = server.add_file("m.bin", payload)
    with ForwardProxy() as proxy:
        clean_env.setenv("http_proxy", proxy.url)
        clean_env.setenv("NO_PROXY", no_proxy)
        asyncfetch.download(url, tmp_path / "m.bin", connections=2, chunk_size=CHUNK)
    assert (tmp_path / "m.bin").read_bytes() == payload
    assert proxy.requests == []


@pytest.mark.parametrize("given", ["", "pxuser:wrong@"])
def test_407_says_proxy_authentication_required_and_names_the_proxy(
    server: FaultServer, payload: bytes, tmp_path: Path, clean_env: pytest.MonkeyPatch,
    given: str,
) -> None:  # fmt: skip
    url = server.add_file("m.bin", payload)
    with ForwardProxy(auth="pxuser:pxpass") as proxy:
        clean_env.setenv("http_proxy", f"http://{given}127.0.0.1:{proxy.port}")
        with pytest.raises(HTTPStatusError) as caught:
            asyncfetch.download(url, tmp_path / "m.bin", retry=0)
    message = str(caught.value)
    assert caught.value.status == 407
    assert "proxy authentication required" in message
    assert f"127.0.0.1:{proxy.port}" in message
    assert "may not exist" not in message
    assert "wrong" not in message


def test_https_goes_through_connect_and_a_407_there_names_the_proxy(
    server: FaultServer, payload: bytes, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    server.add_file("m.bin", payload)
    url = f"https://127.0.0.1:{server.base_url.rsplit(':', 1)[1]}/files/m.bin"
    with ForwardProxy(auth="pxuser:pxpass") as proxy:
        clean_env.setenv("HTTPS_PROXY", f"127.0.0.1:{proxy.port}")
        with pytest.raises(HTTPStatusError, match="proxy authentication required") as caught:
            asyncfetch.download(url, tmp_path / "m.bin", retry=0)
    assert caught.value.status == 407
    assert f"127.0.0.1:{proxy.port}" in str(caught.value)
    assert proxy.requests[0] == f"CONNECT 127.0.0.1:{url.split(':')[2].split('/')[0]}"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxys_html_error_page_is_named_not_parsed(
    server: FaultServer, payload: bytes, tmp_path: Path, clean_env: pytest.MonkeyPatch,
    scheme: str,
) -> None:  # fmt: skip
    server.add_file("m.bin", payload)
    url = f"{scheme}://127.0.0.1:{server.base_url.rsplit(':', 1)[1]}/files/m.bin"
    with ForwardProxy(html_401=True) as proxy:
        clean_env.setenv("all_proxy", proxy.url)
        with pytest.raises(TransportError) as caught:
            asyncfetch.download(url, tmp_path / "m.bin", retry=no_wait(3)[0])
    message = str(caught.value)
    assert f"the proxy http://127.0.0.1:{proxy.port}" in message
    assert "<" not in message
    assert "administrator" not in message
    assert len(proxy.requests) == 1  # not retried: the proxy will say the same again
