"""Who ``asyncfetch serve`` answers: the token, ``Host``, ``Origin`` and JSON-body rules, and
the refusal to listen beyond loopback without a token."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from asyncfetch import InvalidRequest
from asyncfetch._service.guard import Guard, host_name, load_token
from tests.faultserver import FaultServer
from tests.helpers import cli_env, leftovers
from tests.service.test_app import JSON, Running, _http, _stop, running, serve_process

TOKEN = "s3cret-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def host_of(svc: Running) -> str:
    return svc.url.removeprefix("http://")


async def answer(svc: Running, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with svc.client.request(method, svc.url + path, **kwargs) as response:
        body = await response.read()
        return response.status, (json.loads(body) if body.startswith(b"{") else {})


# ---- Origin, content type, Host --------------------------------------------------------------


async def test_a_web_page_cannot_start_a_download(tmp_path: Path, server: FaultServer) -> None:
    url = server.add_file("m.bin", b"x" * 1000)
    async with running(tmp_path / "cache") as svc:
        # what a form or fetch() on http://evil.example sends: a simple request, no preflight
        status, body = await answer(
            svc, "POST", "/fetch", data=json.dumps({"url": url}),
            headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
        )  # fmt: skip
        assert (status, body["type"]) == (403, "OriginNotAllowed")
        for origin in ("null", f"http://{host_of(svc)}.evil.example", "http://localhost:1"):
            status, body = await svc.post({"url": url}, headers={"Origin": origin})
            assert (status, body["type"]) == (403, "OriginNotAllowed"), origin
        status, body = await answer(
            svc,
            "POST",
            "/fetch",
            data=json.dumps({"url": url}),
            headers={"Content-Type": "text/plain"},
        )
        assert (status, body["type"]) == (415, "UnsupportedMediaType")
        assert "application/json" in body["error"]
        status, body = await answer(svc, "POST", "/fetch", data=json.dumps({"url": url}))
        assert status == 415
    assert server.requests == []
    assert leftovers(tmp_path / "cache") == []


async def test_the_services_own_origin_and_a_json_body_are_answered(
    tmp_path: Path, server: FaultServer
) -> None:
    url = server.add_file("m.bin", b"x" * 1000)
    async with running(tmp_path / "cache") as svc:
        origin = {"Origin": svc.url}
        status, body = await svc.post({"url": url}, headers=origin)
        assert status == 200, body
        charset = {"Content-Type": "Application/JSON; charset=utf-8"}
        assert (await svc.post({"url": url}, headers=charset))[0] == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:{port}", "localhost.evil.example", "", "a b", "[::1"]
)
async def test_a_request_must_name_the_service_in_host(
    tmp_path: Path, server: FaultServer, host: str
) -> None:
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1."""
    url = server.add_file("m.bin", b"x" * 1000)
    async with running(tmp_path / "cache") as svc:
        (svc.service.cache_dir / "secret.bin").write_bytes(b"TOP SECRET")
        wrong = {"Host": host.format(port=svc.url.rsplit(":", 1)[1])}
        for method, path in (("POST", "/fetch"), ("GET", "/cache"), ("GET", "/files/secret.bin")):
            status, body = await answer(
                svc, method, path, data=json.dumps({"url": url}), headers=JSON | wrong
            )
            assert (status, body.get("type")) == (403, "HostNotAllowed"), (method, path)
            assert "--allowed-host" in body["error"]
        assert (await answer(svc, "GET", "/health", headers=wrong))[0] == 200
    assert server.requests == []


async def test_localhost_addresses_and_allowed_names_are_the_services_names(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "cache", guard=Guard(hosts=("Node1", "mirror.lan"))) as svc:
        port = svc.url.rsplit(":", 1)[1]
        for host in (host_of(svc), f"localhost:{port}", f"[::1]:{port}", "192.168.1.5:9000",
                     "node1", f"NODE1:{port}", "mirror.lan.:8080", "localhost"):  # fmt: skip
            assert (await answer(svc, "GET", "/cache", headers={"Host": host}))[0] == 200, host
        assert (await answer(svc, "GET", "/cache", headers={"Host": "node2"}))[0] == 403


# ---- the token -------------------------------------------------------------------------------


async def test_the_token_guards_every_route_that_starts_or_lists_work(
    tmp_path: Path, server: FaultServer
) -> None:
    url = server.add_file("m.bin", b"x" * 1000)
    async with running(tmp_path / "cache", guard=Guard(token=TOKEN)) as svc:
        (svc.service.cache_dir / "old.bin").write_bytes(b"cached")
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                        {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):  # fmt: skip
            for method, path in (("POST", "/fetch"), ("GET", "/cache"), ("GET", "/files/old.bin"),
                                 ("HEAD", "/files/old.bin")):  # fmt: skip
                async with svc.client.request(
                    method, svc.url + path, data=json.dumps({"url": url}), headers=JSON | headers
                ) as response:
                    assert response.status == 401, (headers, method, path)
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
                    body = await response.read()
                    assert TOKEN.encode() not in body
        assert (await answer(svc, "GET", "/health"))[0] == 200
        assert server.requests == []

        status, body = await svc.post({"url": url}, headers=BEARER)
        assert status == 200, body
        assert (await answer(svc, "GET", "/cache", headers=BEARER))[0] == 200
        assert await svc.get("/files/m.bin", headers=BEARER) == (200, b"x" * 1000)


async def test_public_files_opens_only_the_files(tmp_path: Path) -> None:
    guard = Guard(token=TOKEN, public_files=True)
    async with running(tmp_path / "cache", guard=guard) as svc:
        (svc.service.cache_dir / "m.bin").write_bytes(b"weights")
        assert await svc.get("/files/m.bin") == (200, b"weights")
        async with svc.client.head(f"{svc.url}/files/m.bin") as response:
            assert response.status == 200
        assert (await answer(svc, "GET", "/cache"))[0] == 401
        assert (await svc.post({"url": "http://127.0.0.1:9/x.bin"}))[0] == 401


def test_a_token_is_long_visible_text_and_its_file_is_private(tmp_path: Path) -> None:
    for short in ("", "short", "has a space in it ok", "tab\tinside-0123456789"):
        with pytest.raises(InvalidRequest, match="at least 16"):
            Guard(token=short)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    with pytest.raises(InvalidRequest, match="chmod 600"):
        load_token(token_file, None)
    token_file.chmod(0o600)
    assert load_token(token_file, "ignored-when-a-file-is-given") == TOKEN
    assert load_token(None, f"  {TOKEN} ") == TOKEN
    assert load_token(None, None) is None
    with pytest.raises(InvalidRequest, match="cannot read the token file"):
        load_token(tmp_path / "missing", None)
    (tmp_path / "link").symlink_to(token_file)
    with pytest.raises(InvalidRequest, match="not a link"):
        load_token(tmp_path / "link", None)
    assert "s3cret" not in repr(Guard(token=TOKEN))


@pytest.mark.parametrize(
    ("value", "name"),
    [("127.0.0.1:8765", "127.0.0.1"), ("[::1]:8765", "::1"), ("Node1.", "node1"),
     ("node1:80", "node1"), ("[::1", None), ("a:b", None), ("", None), ("x/y", None)],
)  # fmt: skip
def test_host_names(value: str, name: str | None) -> None:
    assert host_name(value) == name


# ---- listening -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "node1.example"])
def test_listening_beyond_loopback_without_a_token_refuses_to_start(
    tmp_path: Path, host: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "serve", "--host", host, "--port", "0",
         "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=30, env=cli_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("asyncfetch: error: refusing to listen on")
    assert "--token-file" in done.stderr
    assert "ASYNCFETCH_SERVICE_TOKEN" in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stdout == ""
    assert not (tmp_path / "cache").exists()


def test_a_world_readable_token_file_refuses_to_start(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    done = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "serve", "--host", "0.0.0.0", "--port", "0",
         "--token-file", str(token_file)],
        capture_output=True, text=True, timeout=30, env=cli_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"chmod 600 {token_file}" in done.stderr
    assert TOKEN not in done.stderr


@pytest.mark.parametrize("given", ["file", "env"])
def test_serving_every_address_with_a_token(
    tmp_path: Path, server: FaultServer, given: str
) -> None:
    url = server.add_file("m.bin", b"x" * 1000)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    options = ["--host", "0.0.0.0"] + (["--token-file", str(token_file)] if given == "file" else [])
    env = cli_env(ASYNCFETCH_SERVICE_TOKEN=TOKEN) if given == "env" else None
    with serve_process(tmp_path / "cache", *options, env=env) as (process, service_url):
        with pytest.raises(urllib.error.HTTPError) as refused:
            _http(f"{service_url}/fetch", {"url": url})
        refused.value.close()
        assert refused.value.code == 401
        assert _http(f"{service_url}/fetch", {"url": url}, BEARER)["size"] == 1000
        code, stderr = _stop(process, signal.SIGTERM)
    assert code == 0, stderr
    assert TOKEN not in stderr
    assert leftovers(tmp_path / "cache") == ["m.bin"]
