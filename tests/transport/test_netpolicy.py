"""The outbound address policy: which addresses it refuses, how it reads host spellings, and
that both receive paths ask it before every connection and every redirect."""

from __future__ import annotations

import ipaddress
import pickle
from collections.abc import Sequence
from pathlib import Path

import pytest

from asyncfetch import AddressBlocked, InvalidRequest
from asyncfetch._options import make_options
from asyncfetch._transport.client import Transport
from asyncfetch._transport.netpolicy import NetPolicy, literal_address
from tests.faultserver import FaultServer
from tests.helpers import leftovers, no_wait
from tests.service.test_app import running


async def fake_resolver(host: str, port: int) -> Sequence[str]:
    """``evil.test`` is loopback, ``split.test`` public and loopback, ``public.test`` public."""
    table = {
        "evil.test": ["127.0.0.1"],
        "split.test": ["127.0.0.1", "93.184.216.34"],
        "public.test": ["93.184.216.34"],
    }
    if host not in table:
        raise OSError(f"{host}: no such host")
    return table[host]


POLICY = NetPolicy(resolver=fake_resolver)

REFUSED = [
    "127.0.0.1", "127.8.9.10", "::1", "0.0.0.0", "::", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "100.64.0.1", "169.254.169.254", "169.254.1.1", "fe80::1", "fd00::1", "fd00:ec2::254",
    "100.100.100.200", "192.0.0.192", "168.63.129.16", "224.0.0.1", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "198.18.0.1",
]  # fmt: skip


@pytest.mark.parametrize("text", REFUSED)
def test_local_and_metadata_addresses_are_refused(text: str) -> None:
    assert POLICY.refusal(ipaddress.ip_address(text)) is not None


@pytest.mark.parametrize("text", ["93.184.216.34", "2606:2800:220:1::", "8.8.8.8"])
def test_public_addresses_are_allowed(text: str) -> None:
    assert POLICY.refusal(ipaddress.ip_address(text)) is None


def test_allow_private_allows_the_lan_but_not_the_metadata_endpoints() -> None:
    policy = NetPolicy(allow_private=True)
    for text in ("127.0.0.1", "10.1.2.3", "fd00::1", "::ffff:192.168.0.1", "169.254.1.1"):
        assert policy.refusal(ipaddress.ip_address(text)) is None, text
    for text in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "::ffff:169.254.169.254"):
        assert "metadata" in str(policy.refusal(ipaddress.ip_address(text))), text


def test_allowed_networks_allow_exactly_what_they_hold() -> None:
    policy = NetPolicy(allowed=("10.0.0.0/8", "169.254.169.254"))
    for text in ("10.9.9.9", "::ffff:10.0.0.1", "169.254.169.254"):
        assert policy.refusal(ipaddress.ip_address(text)) is None, text
    for text in ("127.0.0.1", "192.168.0.1", "169.254.169.253"):
        assert policy.refusal(ipaddress.ip_address(text)) is not None, text


def test_a_bad_network_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="not a network"):
        NetPolicy(allowed=("10.0.0.0/33",))


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("::1", "::1"),
        ("example.org", None),
        ("1.2.3.example", None),
    ],
)
def test_host_spellings_are_read_as_the_system_reads_them(host: str, address: str | None) -> None:
    found = literal_address(host)
    assert (str(found) if found is not None else None) == address


async def test_names_are_judged_by_what_they_resolve_to() -> None:
    url = "http://evil.test/m.bin"
    with pytest.raises(AddressBlocked, match="evil.test: it resolves to 127.0.0.1") as refused:
        await POLICY.addresses("evil.test", 80, url=url)
    assert refused.value.address == "127.0.0.1"
    assert refused.value.retryable is False
    assert refused.value.url == url
    assert await POLICY.addresses("split.test", 80, url=url) == ["93.184.216.34"]
    assert await POLICY.addresses("public.test", 80, url=url) == ["93.184.216.34"]
    with pytest.raises(OSError, match="no such host"):
        await POLICY.addresses("nowhere.test", 80, url=url)


def test_address_blocked_pickles() -> None:
    error = AddressBlocked("http://u:p@x/: refused", url="http://u:p@x/", address="127.0.0.1")
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again), again.address) == (AddressBlocked, str(error), "127.0.0.1")
    assert "p@" not in str(again)


@pytest.fixture(params=["fast", "aiohttp"])
def receive_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on the fast path and again on aiohttp."""
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", "1" if request.param == "fast" else "0")
    return str(request.param)


def spellings(server: FaultServer) -> list[str]:
    port = server.base_url.rsplit(":", 1)[1]
    return [
        server.url("m.bin"),
        f"http://2130706433:{port}/files/m.bin",
        f"http://0x7f000001:{port}/files/m.bin",
        f"http://[::ffff:127.0.0.1]:{port}/files/m.bin",
        f"http://evil.test:{port}/files/m.bin",
        server.url("m.bin", redirect_to="http://169.254.169.254/latest/meta-data/"),
    ]


async def test_both_paths_refuse_local_addresses_before_connecting(
    server: FaultServer, receive_path: str
) -> None:
    server.add_file("m.bin", b"x" * 1000)
    for url in spellings(server):
        async with Transport(make_options(connections=1), policy=POLICY) as transport:
            with pytest.raises(AddressBlocked):
                await transport.probe(url)
    assert server.requests == []


async def test_both_paths_judge_every_redirect(server: FaultServer, receive_path: str) -> None:
    server.add_file("m.bin", b"x" * 1000)
    policy = NetPolicy(resolver=fake_resolver, allowed=("127.0.0.1/32",))
    port = server.base_url.rsplit(":", 1)[1]
    async with Transport(make_options(connections=1), policy=policy) as transport:
        for url in (server.url("m.bin"), f"http://evil.test:{port}/files/m.bin"):
            assert (await transport.probe(url)).size == 1000
        for target in ("http://169.254.169.254/latest/meta-data/", "http://[::1]:9/m.bin"):
            with pytest.raises(AddressBlocked) as refused:
                await transport.probe(server.url("m.bin", redirect_to=target))
            assert refused.value.url == target
            assert refused.value.retryable is False


async def test_no_policy_connects_anywhere(server: FaultServer, receive_path: str) -> None:
    url = server.add_file("m.bin", b"x" * 1000)
    async with Transport(make_options(connections=1)) as transport:
        assert (await transport.probe(url)).size == 1000


# ---- through the service ---------------------------------------------------------------------


async def test_the_service_refuses_to_fetch_from_the_local_network(
    tmp_path: Path, server: FaultServer, payload: bytes, receive_path: str
) -> None:
    server.add_file("m.bin", payload)
    retry, sleeps = no_wait()
    async with running(tmp_path / "cache", net=POLICY, retry=retry) as svc:
        (svc.service.cache_dir / "secret.bin").write_bytes(b"TOP SECRET")
        urls = [*spellings(server), f"{svc.url}/cache", f"{svc.url}/files/secret.bin"]
        for number, url in enumerate(urls):
            status, answer = await svc.post({"url": url, "name": f"stolen{number}.bin"})

            assert status == 403, (url, answer)
            assert answer["type"] == "AddressBlocked"
            assert "local network" in answer["error"]
            assert (await svc.get(f"/files/stolen{number}.bin"))[0] == 404
    assert server.requests == []
    assert sleeps.waits == []  # refused at once, never retried
    assert leftovers(tmp_path / "cache") == ["secret.bin"]


async def test_the_service_refuses_a_redirect_to_the_metadata_endpoint(
    tmp_path: Path, server: FaultServer, payload: bytes, receive_path: str
) -> None:
    server.add_file("m.bin", payload)
    metadata = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    allowed = NetPolicy(allowed=("127.0.0.1/32",), resolver=fake_resolver)
    async with running(tmp_path / "cache", net=allowed) as svc:
        status, answer = await svc.post({"url": server.url("m.bin", redirect_to=metadata)})
        assert status == 403, answer
        assert answer["type"] == "AddressBlocked"
        assert "169.254.169.254" in answer["error"]
        assert "metadata" in answer["error"]

        status, answer = await svc.post({"url": server.url("m.bin")})  # the allowed network
        assert status == 200, answer


async def test_a_name_resolving_to_loopback_is_allowed_only_when_the_operator_says_so(
    tmp_path: Path, server: FaultServer, payload: bytes, receive_path: str
) -> None:
    server.add_file("m.bin", payload)
    url = f"http://evil.test:{server.base_url.rsplit(':', 1)[1]}/files/m.bin"
    async with running(tmp_path / "a", net=POLICY) as svc:
        assert (await svc.post({"url": url}))[0] == 403
    assert server.requests == []
    private = NetPolicy(allow_private=True, resolver=fake_resolver)
    async with running(tmp_path / "b", net=private) as svc:
        status, answer = await svc.post({"url": url})
    assert status == 200, answer
    assert (tmp_path / "b" / "m.bin").read_bytes() == payload


async def test_through_a_proxy_the_target_is_judged_not_the_proxy(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", server.base_url)  # the FaultServer answers as a proxy
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    server.add_file("m.bin", b"x" * 1000)
    async with Transport(make_options(connections=1), policy=POLICY) as transport:
        assert (await transport.probe("http://public.test/files/m.bin")).size == 1000
        for url in ("http://evil.test/files/m.bin", "http://127.0.0.1/files/m.bin"):
            with pytest.raises(AddressBlocked):
                await transport.probe(url)
    assert [r.path for r in server.requests] == ["/files/m.bin"] * len(server.requests)
    assert len(server.requests) in (1, 2)  # HEAD, maybe a 1-byte GET: public.test's only


async def resolve_localhost(host: str, port: int) -> Sequence[str]:
    """:func:`fake_resolver`, and ``localhost`` as the system has it."""
    return ["127.0.0.1"] if host == "localhost" else await fake_resolver(host, port)


async def test_a_redirect_to_the_proxys_own_name_is_judged_when_it_bypasses_the_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes, receive_path: str
) -> None:
    # a proxy on this machine by name (cntlm, px), and the usual no_proxy for local names: a
    # redirect to that name goes direct, and the name must be judged like any other
    monkeypatch.setenv("http_proxy", "http://localhost:9/")
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.2")
    monkeypatch.delenv("NO_PROXY", raising=False)
    with FaultServer(host="127.0.0.2") as public, FaultServer() as secret:
        public.add_file("m.bin", payload)
        secret.add_file("secret.bin", b"TOP SECRET")
        target = f"http://localhost:{secret.base_url.rsplit(':', 1)[1]}/files/secret.bin"
        allowed = NetPolicy(allowed=("127.0.0.2/32",), resolver=resolve_localhost)
        async with running(tmp_path / "cache", net=allowed) as svc:
            status, answer = await svc.post({"url": public.url("m.bin", redirect_to=target)})
        assert status == 403, answer
        assert answer["type"] == "AddressBlocked"
        assert secret.requests == []
