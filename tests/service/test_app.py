"""``asyncfetch serve``: the service in-process and as a subprocess, a FaultServer upstream."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web

import asyncfetch.cache
from asyncfetch._service import routes
from asyncfetch._service.app import Service
from asyncfetch._service.routes import V1
from asyncfetch._transport.netpolicy import NetPolicy
from tests.faultserver import FaultServer, RequestRecord, make_payload
from tests.helpers import cli_env, leftovers, no_wait, sha256, with_credentials

START_TIMEOUT_S = 20.0
JSON = {"Content-Type": "application/json"}


@dataclass
class Running:
    """A service on a free loopback port, and a client session for it."""

    service: Service
    url: str
    client: aiohttp.ClientSession

    async def post(self, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        kwargs["headers"] = JSON | kwargs.get("headers", {})
        async with self.client.post(f"{self.url}/fetch", data=data, **kwargs) as response:
            return response.status, await response.json()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, bytes]:
        async with self.client.get(yarl.URL(self.url + path, encoded=True), **kwargs) as response:
            return response.status, await response.read()


@contextlib.asynccontextmanager
async def running(cache_dir: Path, **options: Any) -> AsyncIterator[Running]:
    """The service on a free loopback port; its downloads may reach loopback (the FaultServer)
    unless ``net`` says otherwise."""
    options.setdefault("retry", no_wait()[0])
    options.setdefault("net", NetPolicy(allow_private=True))
    service = Service(cache_dir, **options)
    runner = web.AppRunner(service.app(), handler_cancellation=True)  # as serve() runs it
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as client:
            yield Running(service, f"http://{host}:{port}", client)
    finally:
        await runner.cleanup()


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Running]:
    """The service with ``tmp_path/cache`` as its cache dir."""
    async with running(tmp_path / "cache") as started:
        yield started


def file_gets(server: FaultServer, name: str) -> list[RequestRecord]:
    return [r for r in server.gets(name) if r.range != (0, 0)]


async def test_fetch_then_serve_a_range_of_the_same_bytes(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("model.bin", payload)

    status, body = await svc.post({"url": url, "sha256": sha256(payload)})

    assert status == 200, body
    assert body["name"] == "model.bin"
    assert body["size"] == len(payload)
    assert body["sha256"] == sha256(payload)
    assert body["bytes_by_mirror"] == {url: len(payload)}
    assert Path(body["path"]) == svc.service.cache_dir / "model.bin"
    status, data = await svc.get(body["href"], headers={"Range": "bytes=1000-1999"})
    assert status == 206
    assert data == payload[1000:2000]
    status, data = await svc.get("/files/model.bin")
    assert (status, data) == (200, payload)


async def test_name_chooses_the_cache_file(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("model.bin", payload)
    status, body = await svc.post({"url": url, "name": "resnet-1234.pth"})
    assert status == 200, body
    assert leftovers(svc.service.cache_dir) == ["resnet-1234.pth"]


async def test_a_downloaded_page_is_served_as_bytes_never_as_a_page_of_the_service(
    svc: Running, server: FaultServer
) -> None:
    # text/html from the service's own origin would run its script as the service's page:
    # its POSTs carry the service's Origin, which the guard lets through, and in the status
    # page's tab it reads the token that page keeps
    page = b"<script>fetch('/fetch', {method: 'POST'})</script>"
    url = server.add_file("page.html", page)
    assert (await svc.post({"url": url, "name": "page.html"}))[0] == 200
    for method, route in itertools.product(("GET", "HEAD"), ("/files/", "/v1/files/")):
        async with svc.client.request(method, f"{svc.url}{route}page.html") as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"] == "application/octet-stream"
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            assert answer.headers["Content-Security-Policy"] == "sandbox"
            assert answer.headers["Content-Disposition"] == "attachment"
            assert await answer.read() == (page if method == "GET" else b"")


async def test_concurrent_posts_share_one_download(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", rate=2 << 20)  # slow enough for the three requests to overlap

    answers = await asyncio.gather(*(svc.post({"url": url}) for _ in range(3)))

    assert [status for status, _ in answers] == [200, 200, 200]
    assert {body["sha256"] for _, body in answers} == {sha256(payload)}
    assert sum(r.bytes_sent for r in file_gets(server, "m.bin")) == len(payload)
    assert len([r for r in server.requests if r.method == "HEAD"]) == 1


async def test_a_client_leaving_does_not_cancel_the_download(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", rate=1 << 20)
    with pytest.raises(asyncio.TimeoutError):
        await svc.post({"url": url}, timeout=aiohttp.ClientTimeout(total=0.3))
    assert svc.service.cache_dir.joinpath("m.bin").exists() is False

    status, body = await svc.post({"url": url})  # joins the download still running

    assert status == 200, body
    assert sum(r.bytes_sent for r in file_gets(server, "m.bin")) == len(payload)
    assert (svc.service.cache_dir / "m.bin").read_bytes() == payload


async def test_distinct_downloads_wait_for_a_free_slot(tmp_path: Path, server: FaultServer) -> None:
    for name in ("a.bin", "b.bin"):
        server.add_file(name, make_payload(256 << 10))
    urls = [server.url(name, rate=1 << 20) for name in ("a.bin", "b.bin")]
    async with running(tmp_path / "cache", max_downloads=1) as svc:
        answers = await asyncio.gather(*(svc.post({"url": u}) for u in urls))
    assert [status for status, _ in answers] == [200, 200]
    a, b = file_gets(server, "a.bin"), file_gets(server, "b.bin")
    first, second = (a, b) if a[0].timestamp < b[0].timestamp else (b, a)
    assert max(r.finished or 0 for r in first) <= min(r.timestamp for r in second)


async def started(server: FaultServer, name: str) -> None:
    """Return once ``server`` has begun sending ``name`` (bounded: ~2 s)."""
    for _ in range(200):
        if server.bytes_served(name):
            return
        await asyncio.sleep(0.01)


async def test_a_request_joining_a_download_still_gets_its_digest_checked(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", rate=2 << 20)
    first = asyncio.create_task(svc.post({"url": url}))
    await started(server, "m.bin")

    status, answer = await svc.post({"url": url, "sha256": "0" * 64})

    assert status == 422
    assert answer["type"] == "IntegrityError"
    assert "fetched for another request" in answer["error"]
    assert (await first)[0] == 200
    assert sum(r.bytes_sent for r in file_gets(server, "m.bin")) == len(payload)


async def test_the_same_url_signed_again_joins_the_download_under_way(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    first_url = server.url("m.bin", rate=1 << 20, **{"X-Amz-Signature": "FIRST"})
    first = asyncio.create_task(svc.post({"url": first_url}))
    await started(server, "m.bin")

    status, answer = await svc.post(
        {"url": server.url("m.bin", rate=1 << 20, **{"X-Amz-Signature": "SECOND"})}
    )

    assert status == 200, answer
    assert (await first)[0] == 200
    assert sum(r.bytes_sent for r in file_gets(server, "m.bin")) == len(payload)
    assert all(r.query["X-Amz-Signature"] == "FIRST" for r in file_gets(server, "m.bin"))


async def test_another_url_for_a_name_downloading_now_is_409(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    server.add_file("a.bin", payload)
    server.add_file("c.bin", make_payload(1000))
    a_url, c_url = server.url("a.bin", rate=1 << 20), server.url("c.bin")  # ~1 s to overlap
    first = asyncio.create_task(svc.post({"url": a_url, "name": "x.bin"}))
    await started(server, "a.bin")

    status, answer = await svc.post({"url": c_url, "name": "x.bin"})

    assert status == 409, answer
    assert answer["type"] == "NameInUse"
    assert a_url in answer["error"]
    assert c_url in answer["error"]
    assert server.gets("c.bin") == []
    assert (await first)[0] == 200
    assert (svc.service.cache_dir / "x.bin").read_bytes() == payload


async def test_a_joining_request_is_judged_by_its_own_digest(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    server.add_file("j.bin", payload)
    url = server.url("j.bin", rate=2 << 20)
    wrong = asyncio.create_task(svc.post({"url": url, "sha256": "0" * 64}))
    await started(server, "j.bin")

    status, answer = await svc.post({"url": url, "sha256": sha256(payload)})

    assert status == 200, answer
    assert answer["sha256"] == sha256(payload)
    status, answer = await wrong
    assert status == 422
    assert "0" * 64 in answer["error"]
    assert (svc.service.cache_dir / "j.bin").read_bytes() == payload
    assert await svc.get("/files/j.bin") == (200, payload)


async def downloading(svc: Running, name: str) -> None:
    """Return once the service lists a download of ``name`` as running (bounded: ~2 s)."""
    for _ in range(200):
        if name in json.loads((await svc.get("/cache"))[1])["downloading"]:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("own", ["right", "wrong", None])
async def test_a_request_joining_a_cache_hit_is_judged_by_its_own_digest(
    tmp_path: Path, server: FaultServer, payload: bytes, own: str | None
) -> None:
    old = make_payload(5000)  # an older version, cached and verified under its own digest
    server.add_file("old.bin", old)
    server.add_file("new.bin", payload)
    server.add_file("busy.bin", make_payload(256 << 10))
    new_url, busy_url = server.url("new.bin"), server.url("busy.bin", rate=1 << 20)
    digest = {"right": sha256(payload), "wrong": "0" * 64, None: None}[own]
    async with running(tmp_path / "cache", max_downloads=1) as svc:
        status, _ = await svc.post({"url": server.url("old.bin"), "name": "j.bin",
                                    "sha256": sha256(old)})  # fmt: skip
        assert status == 200
        busy = asyncio.create_task(svc.post({"url": busy_url}))  # holds the only slot
        await started(server, "busy.bin")
        # waits for the slot, then is a cache hit: the file has the digest it asks for
        other = asyncio.create_task(
            svc.post({"url": new_url, "name": "j.bin", "sha256": sha256(old)})
        )
        await downloading(svc, "j.bin")

        replace = {"replace": True} if own else {}  # another file than the one cached
        status, answer = await svc.post(
            {"url": new_url, "name": "j.bin", "sha256": digest} | replace
        )

        assert (await busy)[0] == 200
        assert (await other)[0] == 200
    if own == "wrong":
        assert status == 422, answer
        assert answer["type"] == "IntegrityError"
        assert f"expected {'0' * 64}, got {sha256(payload)}" in answer["error"]
        assert "fetched for another request" not in answer["error"]
    elif own == "right":
        assert status == 200, answer
        assert answer["sha256"] == sha256(payload)
        assert (tmp_path / "cache" / "j.bin").read_bytes() == payload
    else:
        assert status == 200, answer
        assert answer["sha256"] == sha256(old)  # the file asked for under this name and URL


@pytest.mark.parametrize("name", ["we#ird?.bin", "sp ace.bin", "per%25cent.bin"])
async def test_href_is_percent_encoded(
    svc: Running, server: FaultServer, payload: bytes, name: str
) -> None:
    url = server.add_file("m.bin", payload)
    status, body = await svc.post({"url": url, "name": name})
    assert status == 200, body
    assert body["href"] == "/files/" + urllib.parse.quote(name, safe="")
    assert await svc.get(body["href"]) == (200, payload)


async def test_a_file_found_corrupt_is_not_served_until_fetched_again(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    assert (await svc.post({"url": url, "sha256": sha256(payload)}))[0] == 200
    cached = svc.service.cache_dir / "m.bin"
    with cached.open("r+b") as file:  # one flipped byte, as a bad disk would
        file.seek(1000)
        file.write(bytes([payload[1000] ^ 0xFF]))
    found = await asyncio.to_thread(asyncfetch.cache.verify, ["m.bin"], svc.service.cache_dir)
    assert found[0].status == "corrupt"

    for method in ("GET", "HEAD"):
        async with svc.client.request(method, f"{svc.url}/files/m.bin") as answer:
            assert answer.status == 409
    status, body = await svc.get("/files/m.bin")
    assert json.loads(body)["type"] == "Corrupt"
    assert "corrupt" in json.loads(body)["error"]
    listing = json.loads((await svc.get("/cache"))[1])
    assert [(f["name"], f["state"]) for f in listing["files"]] == [("m.bin", "corrupt")]

    status, body = await svc.post({"url": url, "sha256": sha256(payload)})  # fetched again

    assert status == 200, body
    assert await svc.get("/files/m.bin") == (200, payload)
    listing = json.loads((await svc.get("/cache"))[1])
    assert [(f["name"], f["state"]) for f in listing["files"]] == [("m.bin", "complete")]


async def test_a_corrupt_file_touched_since_stays_corrupt_until_verified_again(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    assert (await svc.post({"url": url, "sha256": sha256(payload)}))[0] == 200
    cached = svc.service.cache_dir / "m.bin"
    with cached.open("r+b") as file:
        file.seek(1000)
        file.write(bytes([payload[1000] ^ 0xFF]))
    found = await asyncio.to_thread(asyncfetch.cache.verify, ["m.bin"], svc.service.cache_dir)
    assert found[0].status == "corrupt"
    st = cached.stat()
    os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # `touch m.bin`

    status, body = await svc.get("/files/m.bin")

    assert status == 409, body
    assert json.loads(body)["type"] == "Corrupt"
    listing = json.loads((await svc.get("/cache"))[1])
    assert [(f["name"], f["state"]) for f in listing["files"]] == [("m.bin", "corrupt")]
    found = await asyncio.to_thread(asyncfetch.cache.verify, ["m.bin"], svc.service.cache_dir)
    assert found[0].status == "corrupt"  # verified again: still corrupt
    assert (await svc.get("/files/m.bin"))[0] == 409
    with cached.open("r+b") as file:  # repaired by hand, then verified: served again
        file.seek(1000)
        file.write(payload[1000:1001])
    found = await asyncio.to_thread(asyncfetch.cache.verify, ["m.bin"], svc.service.cache_dir)
    assert found[0].status == "ok"
    assert await svc.get("/files/m.bin") == (200, payload)


async def test_a_cache_dir_replaced_by_a_file_is_507_saying_so(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    cache = svc.service.cache_dir
    shutil.rmtree(cache)
    cache.write_bytes(b"not a directory")

    status, answer = await svc.post({"url": url})

    assert status == 507, answer
    assert answer["type"] == "DestinationError"
    assert f"{cache} is a file, not a directory" in answer["error"]
    assert "does not exist" not in answer["error"]


async def test_a_deleted_cache_dir_is_made_again(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    shutil.rmtree(svc.service.cache_dir)
    status, answer = await svc.post({"url": url})
    assert status == 200, answer
    assert (svc.service.cache_dir / "m.bin").read_bytes() == payload


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nothing", 404), ("GET", "/files/", 404), ("POST", "/health", 405)],
)
async def test_unknown_routes_answer_the_json_error_shape(
    svc: Running, method: str, path: str, status: int
) -> None:
    async with svc.client.request(method, svc.url + path) as answer:
        assert answer.status == status
        body = await answer.json()
    assert path in body["error"]
    assert body["type"] in ("NotFound", "MethodNotAllowed")
    if status == 405:
        assert answer.headers["Allow"] == "GET,HEAD"


BAD_BODIES = [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"{}", "'url' is missing"),
    (b'{"url": "http://127.0.0.1:9/m.bin", "sha": "ab"}', "unknown field(s) sha"),
    (b'{"url": "http://127.0.0.1:9/m.bin", "sha256": "abc"}', "64 hex digits"),
    (b'{"url": "http://127.0.0.1:9/m.bin", "mirrors": "http://x/y"}', "list of URLs"),
    (b'{"url": "http://127.0.0.1:9/m.bin", "mirrors": 0}', "list of URLs"),
    (b'{"url": "http://127.0.0.1:9/m.bin", "mirrors": false}', "list of URLs"),
    (b'{"url": "http://127.0.0.1:9/m.bin", "mirrors": ""}', "list of URLs"),
    (
        b'{"url": "http://127.0.0.1:9/m.bin", "mirrors": ['
        + b", ".join(b'"http://127.0.0.1:9/%d/m.bin"' % n for n in range(17))
        + b"]}",
        "at most 16 per file",
    ),
    (b'{"url": "http://127.0.0.1:9/m.bin", "name": "' + b"n" * 300 + b'"}', "at most 200"),
    (b'{"url": "http://127.0.0.1:9/m.bin", "name": "../evil"}', "cannot be a cache file name"),
    (b'{"url": "http://127.0.0.1:9/m.bin", "name": "m.bin.lock"}', "cannot be a cache file"),
    (b'{"url": "http://127.0.0.1:9/"}', "has no file name"),
    (b'{"url": "ftp://127.0.0.1/m.bin"}', "unsupported scheme"),
    (b"[" * 50_000, "nests too deeply"),
    (b'{"url": "http://127.0.0.1:9/m.bin", "name": "a\\ud800.bin"}', "lone surrogate"),
    (b'{"url": "http://127.0.0.1:9/m.bin", "name": "a\\udc80.bin"}', "lone surrogate"),
    (b'{"url": "http://127.0.0.1:9/\\udc80.bin"}', "lone surrogate"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
async def test_bad_requests_are_400(svc: Running, body: bytes, message: str) -> None:
    status, answer = await svc.post(body)
    assert status == 400
    assert answer["type"] == "InvalidRequest"
    assert message in answer["error"]
    assert "\n" not in answer["error"]
    assert leftovers(svc.service.cache_dir) == []


async def test_an_oversized_body_is_refused(svc: Running) -> None:
    status, answer = await svc.post(b'{"url": "' + b"x" * (100 << 10) + b'"}')
    assert status == 413
    assert answer["type"] == "InvalidRequest"
    assert "bytes" in answer["error"]


async def test_upstream_404_is_502_naming_the_url(svc: Running, server: FaultServer) -> None:
    url = server.url("missing.bin")
    status, answer = await svc.post({"url": url})
    assert status == 502
    assert answer["type"] == "HTTPStatusError"
    assert url in answer["error"]
    assert "404" in answer["error"]


async def test_digest_mismatch_is_422_and_caches_nothing(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    status, answer = await svc.post({"url": url, "sha256": "0" * 64})
    assert status == 422
    assert answer["type"] == "IntegrityError"
    assert url in answer["error"]
    assert leftovers(svc.service.cache_dir) == []
    status, _ = await svc.get("/files/m.bin")
    assert status == 404


PRIVATE = ["m.bin.1a2b.part", "m.bin.1a2b.part.json", "m.bin.asyncfetch.json", "m.bin.lock",
           ".hidden", "m.bin.3c4d.partial", "m.bin.unverified", "m.bin.hub-failed.json",
           "m.bin.hub.lock", "m.bin.5e6f.extracting", "m.bin.77.tmp"]  # fmt: skip


@pytest.mark.parametrize(
    "path",
    [
        *(f"/files/{name}" for name in PRIVATE),
        "/files/..%2Fsecret.bin",
        "/files/%2E%2E%2Fsecret.bin",
        "/files/..%5Csecret.bin",
        "/files/%2E%2E",
        "/files/link.bin",  # a symlink out of the cache dir
        "/files/nothing.bin",
        "/files/sub",  # a directory
    ],
)
async def test_only_complete_files_in_the_cache_are_served(svc: Running, path: str) -> None:
    cache = svc.service.cache_dir
    (cache.parent / "secret.bin").write_bytes(b"TOP SECRET CONTENT")
    (cache / "link.bin").symlink_to(cache.parent / "secret.bin")
    (cache / "sub").mkdir()
    for name in PRIVATE:
        (cache / name).write_bytes(b"partial")
    for method in ("GET", "HEAD"):
        async with svc.client.request(method, yarl.URL(svc.url + path, encoded=True)) as answer:
            assert answer.status == 404
            assert b"TOP SECRET" not in await answer.read()


@pytest.mark.parametrize("path", ["/files/model.bin", "/v1/files/model.bin"])
async def test_a_file_is_served_as_itself_never_as_a_compressed_file_beside_it(
    svc: Running, server: FaultServer, payload: bytes, path: str
) -> None:
    model = server.add_file("model.bin", payload)
    other = server.add_file("other.gz", gzip.compress(b"EVIL WEIGHTS" * 1000))
    assert (await svc.post({"url": model, "sha256": sha256(payload)}))[0] == 200
    # any client may fetch any URL under a name of its choosing, model.bin.gz too
    assert (await svc.post({"url": other, "name": "model.bin.gz"}))[0] == 200

    for encodings in ("gzip", "br, gzip, deflate", "zstd, br, gzip"):
        async with svc.client.get(svc.url + path, headers={"Accept-Encoding": encodings}) as r:
            assert r.status == 200
            assert "Content-Encoding" not in r.headers
            assert r.headers["ETag"] == f'"{sha256(payload)}"'
            assert await r.read() == payload, encodings


async def test_a_file_swapped_for_a_link_after_the_service_looked_is_not_served(
    svc: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = svc.service.cache_dir
    (cache.parent / "secret.bin").write_bytes(b"TOP SECRET CONTENT")
    (cache / "m.bin").write_bytes(b"public bytes")
    looked = V1.digest_of

    def then_swapped(self: V1, path: Path) -> Any:
        found = looked(self, path)
        # another user who can write the cache dir, right after the service looked at it
        (cache / "link").symlink_to(cache.parent / "secret.bin")
        os.replace(cache / "link", path)
        return found

    monkeypatch.setattr(V1, "digest_of", then_swapped)
    status, data = await svc.get("/files/m.bin")

    assert b"TOP SECRET" not in data
    assert status == 404


def swap_after_the_digest(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Change the file the service serves right after it took its digest: ``link`` (a link
    out of the cache dir), ``other`` (another file), ``fifo`` (a named pipe) or ``gone``."""
    looked = V1.digest_of

    def then_changed(self: V1, path: Path) -> Any:
        found = looked(self, path)
        stand_in = path.with_name("stand-in")
        if how == "link":
            stand_in.symlink_to(path.parent.parent / "secret.bin")
        if how == "other":
            stand_in.write_bytes(b"other bytes!")
        if how == "fifo":
            os.mkfifo(stand_in)
        if how == "gone":
            path.unlink()
        else:
            os.replace(stand_in, path)
        return found

    monkeypatch.setattr(V1, "digest_of", then_changed)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("how", ["link", "other", "fifo", "gone"])
async def test_a_file_changed_after_its_digest_is_the_json_not_found_without_that_digest(
    svc: Running, monkeypatch: pytest.MonkeyPatch, how: str, method: str
) -> None:
    cache = svc.service.cache_dir
    (cache.parent / "secret.bin").write_bytes(b"TOP SECRET CONTENT")
    (cache / "m.bin").write_bytes(b"public bytes")
    swap_after_the_digest(monkeypatch, how)

    async with svc.client.request(method, f"{svc.url}/v1/files/m.bin") as answer:
        data = await answer.read()

    assert answer.status == 404
    assert answer.content_type == "application/json"
    assert "Repr-Digest" not in answer.headers
    assert "ETag" not in answer.headers
    assert b"TOP SECRET" not in data
    if method == "GET":
        body = json.loads(data)
        assert body["type"] == "NotFound"
        assert "m.bin changed while it was being served" in body["error"]
        assert "retry" in body["error"]
    else:
        assert data == b""


@pytest.mark.parametrize(
    "condition",
    [("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT"),  # would be 304
     ("If-Unmodified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")],  # would be 412
    ids=["not-modified", "precondition-failed"],
)  # fmt: skip
async def test_a_file_changed_after_its_digest_is_not_vouched_for_by_a_bodiless_answer(
    svc: Running, monkeypatch: pytest.MonkeyPatch, condition: tuple[str, str]
) -> None:
    """A 304 or 412 sends no bytes, but its ETag and Repr-Digest would say the file at the
    name is the one the old digest is of: it is the JSON 404 too."""
    (svc.service.cache_dir / "m.bin").write_bytes(b"public bytes")
    swap_after_the_digest(monkeypatch, "other")

    async with svc.client.get(f"{svc.url}/v1/files/m.bin", headers=[condition]) as answer:
        data = await answer.read()

    assert answer.status == 404
    assert "ETag" not in answer.headers
    assert "Repr-Digest" not in answer.headers
    assert "m.bin changed while it was being served" in json.loads(data)["error"]


@pytest.mark.parametrize("path", ["/fetch", "/v1/jobs"])
async def test_a_withheld_body_is_408_not_a_connection_held_for_ever(
    svc: Running, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setattr(routes, "BODY_TIMEOUT", 0.5, raising=False)
    port = int(svc.url.rpartition(":")[2])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        "\r\nContent-Length: 1000\r\n\r\n{".encode()
    )  # and not the rest, ever
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")


async def test_cache_lists_complete_files_and_health_answers(svc: Running) -> None:
    cache = svc.service.cache_dir
    (cache / "a.pth").write_bytes(b"12345")
    (cache / "a.pth.asyncfetch.json").write_text("{}")
    (cache / "b.pth.77.part").write_bytes(b"12")

    status, body = await svc.get("/cache")

    assert status == 200
    listing = json.loads(body)
    assert [(f["name"], f["size"]) for f in listing["files"]] == [("a.pth", 5)]
    assert listing["files"][0]["mtime"] == pytest.approx((cache / "a.pth").stat().st_mtime)
    assert listing["downloading"] == []
    assert await svc.get("/health") == (200, b'{"ok": true}')


async def test_head_gives_size_and_validators(svc: Running) -> None:
    (svc.service.cache_dir / "a.pth").write_bytes(b"x" * 1000)
    async with svc.client.head(f"{svc.url}/files/a.pth") as answer:
        assert answer.status == 200
        assert answer.headers["Content-Length"] == "1000"
        assert answer.headers["Accept-Ranges"] == "bytes"
        assert "ETag" in answer.headers
        assert "Last-Modified" in answer.headers


# ---- as a subprocess -----------------------------------------------------------------------


@contextlib.contextmanager
def serve_process(
    cache_dir: Path, *options: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m asyncfetch serve --port 0 --allow-private ...``, its URL (on 127.0.0.1);
    its state dir is ``state`` beside the cache dir; killed at exit if still running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "asyncfetch", "serve", "--port", "0", "--cache-dir", str(cache_dir),
         "--state-dir", str(cache_dir.parent / "state"), "--allow-private", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or cli_env(),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the child prints it once listening
        found = re.search(r"http://(127\.0\.0\.1|0\.0\.0\.0):(\d+)", line)
        assert found, f"no URL in {line!r}"
        yield process, f"http://127.0.0.1:{found.group(2)}"
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=START_TIMEOUT_S)


def _http(
    url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=JSON | (headers or {}))
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback)
        result: dict[str, Any] = json.loads(answer.read())
        return result


def _stop(process: subprocess.Popen[str], number: signal.Signals) -> tuple[int, str]:
    process.send_signal(number)
    _, stderr = process.communicate(timeout=START_TIMEOUT_S)
    return process.returncode, stderr


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_subprocess_serves_and_stops_cleanly_on_a_signal(
    tmp_path: Path, number: signal.Signals
) -> None:
    with serve_process(tmp_path / "cache") as (process, url):
        assert _http(f"{url}/health") == {"ok": True}
        code, stderr = _stop(process, number)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "GET /health" in stderr  # the access log
    assert (tmp_path / "cache").is_dir()


def test_service_is_a_mirror_for_get(tmp_path: Path, server: FaultServer, payload: bytes) -> None:
    server.add_file("m.bin", payload)
    slow = server.url("m.bin", rate=256 << 10)
    with serve_process(tmp_path / "cache") as (process, url):
        (tmp_path / "cache" / "m.bin").write_bytes(payload)  # as if fetched earlier
        mirror = f"{url}/files/m.bin"
        done = subprocess.run(
            [sys.executable, "-m", "asyncfetch", "get", slow, "--mirror", mirror,
             "-o", str(tmp_path / "out.bin"), "--json", "--chunk-size", "128K",
             "--sha256", sha256(payload)],
            capture_output=True, text=True, timeout=60, env=cli_env(), check=False,
        )  # fmt: skip
        code, stderr = _stop(process, signal.SIGTERM)
    assert done.returncode == 0, done.stderr
    by_mirror = json.loads(done.stdout)["bytes_by_mirror"]
    assert by_mirror.get(mirror, 0) > 0
    assert sum(by_mirror.values()) == len(payload)
    assert (tmp_path / "out.bin").read_bytes() == payload
    assert code == 0, stderr
    assert "GET /files/m.bin" in stderr


def test_a_bad_port_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "serve", "--port", "70000"],
        capture_output=True, text=True, timeout=30, env=cli_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "is not a port number" in done.stderr


def test_port_in_use_is_a_one_line_error(tmp_path: Path, server: FaultServer) -> None:
    port = server.base_url.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "serve", "--port", port, "--cache-dir", str(tmp_path),
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=30, env=cli_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("asyncfetch: error: cannot listen on 127.0.0.1:" + port)
    assert done.stderr.count("\n") == 1
    assert os.listdir(tmp_path) == ["state"]  # the service's lock and job store


def test_a_cache_dir_under_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_bytes(b"")
    wanted = tmp_path / "afile" / "sub"
    done = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "serve", "--port", "0", "--cache-dir", str(wanted),
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=30, env=cli_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith(f"asyncfetch: error: cannot use {wanted} as the cache dir")
    assert f"{tmp_path / 'afile'} is a file, not a directory" in done.stderr
    assert "--cache-dir" in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stdout == ""


def test_stopping_mid_download_keeps_the_part_for_the_next_run(
    tmp_path: Path, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", rate=1 << 20)  # ~1 s for the whole file
    cache = tmp_path / "cache"
    with serve_process(cache) as (process, service_url), ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_http, f"{service_url}/fetch", {"url": url})
        for _ in range(200):  # bounded: ~10 s
            if server.bytes_served("m.bin") > 50_000:
                break
            time.sleep(0.05)
        code, stderr = _stop(process, signal.SIGTERM)
        with pytest.raises(urllib.error.HTTPError) as refused:  # answered before it went away
            waiting.result(timeout=START_TIMEOUT_S)
    assert refused.value.code == 503
    answer = json.loads(refused.value.read())
    assert answer["type"] == "ServiceStopping"
    assert "again" in answer["error"]
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert not (cache / "m.bin").exists()
    assert any(name.endswith(".part") for name in leftovers(cache))

    with serve_process(cache) as (process, service_url):
        answer = _http(f"{service_url}/fetch", {"url": url})  # same URL: resumable
        _stop(process, signal.SIGTERM)
    assert answer["resumed_bytes"] > 0
    assert (cache / "m.bin").read_bytes() == payload


# ---- no silent overwrite ---------------------------------------------------------------------


async def test_another_url_under_a_cached_name_is_409_unless_it_asks_to_replace(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    good = with_credentials(server.add_file("good.bin", payload), "user:secret")
    evil = server.add_file("evil.bin", make_payload(4000, seed=7))
    assert (await svc.post({"url": good, "name": "model.bin"}))[0] == 200

    status, answer = await svc.post({"url": evil, "name": "model.bin"})

    assert status == 409, answer
    assert answer["type"] == "NameTaken"
    assert server.url("good.bin").replace("://", "://user:***@") in answer["error"]
    assert evil in answer["error"]
    assert "secret" not in answer["error"]
    assert '"replace": true' in answer["error"]
    assert server.gets("evil.bin") == []
    assert await svc.get("/files/model.bin") == (200, payload)

    status, answer = await svc.post({"url": evil, "name": "model.bin", "replace": True})

    assert status == 200, answer
    assert await svc.get("/files/model.bin") == (200, make_payload(4000, seed=7))


async def test_the_same_file_under_its_name_is_no_conflict(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    copy = server.add_file("copy.bin", payload)
    assert (await svc.post({"url": url}))[0] == 200
    assert (await svc.post({"url": url}))[0] == 200  # the same URL: asked again
    status, answer = await svc.post({"url": copy, "name": "m.bin", "sha256": sha256(payload)})
    assert (status, answer["cached"]) == (200, True)  # another URL, the digest of the file held
    status, answer = await svc.post({"url": copy, "name": "m.bin", "sha256": "0" * 64})
    assert (status, answer["type"]) == (409, "NameTaken")  # another digest: another file


async def test_a_file_of_unknown_origin_is_not_replaced_silently(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    (svc.service.cache_dir / "m.bin").write_bytes(b"put there by hand")
    url = server.add_file("m.bin", payload)
    status, answer = await svc.post({"url": url})
    assert (status, answer["type"]) == (409, "NameTaken")
    assert "unknown source" in answer["error"]
    assert (svc.service.cache_dir / "m.bin").read_bytes() == b"put there by hand"


@pytest.mark.parametrize(
    "name", ["a\nb.bin", "a\r.bin", "\x1b[31mred.bin", "a\u2028b.bin", "a\x85b.bin", "a\u202eb.bin"]
)
async def test_a_name_with_a_control_character_is_400(svc: Running, name: str) -> None:
    status, answer = await svc.post({"url": "http://127.0.0.1:9/m.bin", "name": name})
    assert status == 400
    assert "control characters" in answer["error"]
    assert leftovers(svc.service.cache_dir) == []


async def test_replace_must_be_true_or_false(svc: Running) -> None:
    status, answer = await svc.post({"url": "http://127.0.0.1:9/m.bin", "replace": "yes"})
    assert (status, answer["type"]) == (400, "InvalidRequest")
    assert "'replace' must be true or false" in answer["error"]
