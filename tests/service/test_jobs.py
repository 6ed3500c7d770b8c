"""``asyncfetch serve``'s jobs API (``/v1/jobs``) and its SQLite store: in-process with a
FaultServer upstream, and as a subprocess killed -9 at seeded random moments."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import random
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from asyncfetch import DestinationError
from asyncfetch._service.app import Service
from asyncfetch._service.store import DB_NAME, NewJob, Store
from asyncfetch._transport.netpolicy import NetPolicy
from tests.faultserver import FaultServer, RequestRecord, make_payload
from tests.helpers import cli_env, leftovers, sha256, with_credentials
from tests.service.test_app import JSON, START_TIMEOUT_S, Running, _http, running, started

NOBODY = 65534
DONE_TIMEOUT_S = 30.0


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Running]:
    """The service in-process, its job store in memory, ``tmp_path/cache`` its cache dir."""
    async with running(tmp_path / "cache") as started_service:
        yield started_service


async def submit(svc: Running, body: Any, **kwargs: Any) -> tuple[int, Any]:
    kwargs["headers"] = JSON | kwargs.get("headers", {})
    async with svc.client.post(f"{svc.url}/v1/jobs", data=json.dumps(body), **kwargs) as answer:
        return answer.status, await answer.json()


async def job(svc: Running, id_: str) -> dict[str, Any]:
    async with svc.client.get(f"{svc.url}/v1/jobs/{id_}") as answer:
        assert answer.status == 200
        result: dict[str, Any] = await answer.json()
        return result


async def ended(svc: Running, id_: str) -> dict[str, Any]:
    """The job once it has ended (bounded: DONE_TIMEOUT_S)."""
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while time.monotonic() < deadline:
        found = await job(svc, id_)
        if found["state"] not in ("queued", "running"):
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {id_} did not end: {found}")


async def test_a_job_is_accepted_then_runs_to_done_and_its_file_is_served(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)

    status, answer = await submit(svc, {"url": url, "sha256": sha256(payload)})

    assert status == 202, answer
    assert answer["href"] == f"/v1/jobs/{answer['id']}"
    assert answer["state"] in ("queued", "running")
    done = await ended(svc, answer["id"])
    assert done["state"] == "done", done
    assert done["bytes"] == done["total"] == len(payload)
    assert done["bytes_by_source"] == {url: len(payload)}
    assert done["runs"] == 1
    assert done["file"] == "/v1/files/m.bin"
    assert await svc.get(done["file"]) == (200, payload)


async def test_a_job_shows_its_bytes_and_speed_while_it_runs(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    status, answer = await submit(svc, {"url": server.url("m.bin", rate=256 << 10)})
    assert status == 202
    await started(server, "m.bin")
    for _ in range(100):  # bounded: ~2 s
        now = await job(svc, answer["id"])
        if now["bytes"] > 0 and now["speed"] > 0:
            break
        await asyncio.sleep(0.02)
    assert now["state"] == "running"
    assert 0 < now["bytes"] < len(payload)
    assert now["total"] == len(payload)
    assert now["speed"] > 0
    assert (await ended(svc, answer["id"]))["state"] == "done"


async def test_the_same_url_and_digest_while_unfinished_is_the_same_job(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", rate=1 << 20)
    status, first = await submit(svc, {"url": with_credentials(url, "u:one")})
    assert status == 202

    again = await submit(svc, {"url": with_credentials(url, "u:two")})  # credentials aside
    other_digest = await submit(
        svc, {"url": with_credentials(url, "u:one"), "sha256": sha256(payload)}
    )
    other_name = await submit(svc, {"url": url, "name": "copy.bin"})

    assert again[0] == 200
    assert again[1]["id"] == first["id"]
    assert "two" not in json.dumps(again[1])
    assert other_digest[0] == other_name[0] == 202
    assert len({first["id"], other_digest[1]["id"], other_name[1]["id"]}) == 3
    for id_ in (first["id"], other_digest[1]["id"], other_name[1]["id"]):
        assert (await ended(svc, id_))["state"] == "done"
    status, later = await submit(svc, {"url": url})  # ended: a new job (a cache hit)
    assert status == 202
    assert later["id"] != first["id"]


async def test_a_list_of_orders_is_accepted_at_once_and_listed_by_state(
    svc: Running, server: FaultServer
) -> None:
    urls = [server.add_file(f"{n}.bin", make_payload(3000, seed=n)) for n in range(3)]
    bad = server.url("missing.bin")

    status, answer = await submit(svc, [{"url": u} for u in [*urls, bad]])

    assert status == 202, answer
    ids = [j["id"] for j in answer["jobs"]]
    ends = [await ended(svc, id_) for id_ in ids]
    assert [e["state"] for e in ends] == ["done", "done", "done", "failed"]
    assert ends[3]["type"] == "HTTPStatusError"
    assert "404" in ends[3]["error"]
    status, body = await svc.get("/v1/jobs?state=failed")
    assert status == 200
    assert [j["id"] for j in json.loads(body)["jobs"]] == [ids[3]]
    status, body = await svc.get("/v1/jobs")
    assert [j["id"] for j in json.loads(body)["jobs"]] == ids
    assert (await svc.get("/v1/jobs?state=nonsense"))[0] == 400
    assert (await svc.get("/v1/jobs/nope"))[0] == 404


async def test_at_most_a_thousand_jobs_are_listed_at_once(svc: Running) -> None:
    store = svc.service.jobs.store
    many = [NewJob(str(n), f"http://127.0.0.1:9/{n}", (), None, f"{n}.bin", False)
            for n in range(1001)]  # fmt: skip
    await store.call(store.add, many, len(many))  # straight into the store: none runs

    for limit in ("", "?limit=1000", "?limit=5000"):
        status, body = await svc.get("/v1/jobs" + limit)
        assert (status, len(json.loads(body)["jobs"])) == (200, 1000), limit
        listed = [job["name"] for job in json.loads(body)["jobs"]]
        assert (listed[0], listed[-1]) == ("1.bin", "1000.bin"), limit  # the newest, in order
    assert len(json.loads((await svc.get("/v1/jobs?limit=0"))[1])["jobs"]) == 0
    for limit in ("-1", "-5000", "x"):
        status, body = await svc.get("/v1/jobs?limit=" + limit)
        assert status == 400, limit
        assert "whole number from 0 to 1000" in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [([], "non-empty list"), ([{"url": "http://127.0.0.1:9/a"}, 3], "item 1"),
     ({"url": "http://127.0.0.1:9/a", "sha256": "x"}, "64 hex digits")],
)  # fmt: skip
async def test_bad_job_orders_are_400_and_accept_nothing(
    svc: Running, body: Any, message: str
) -> None:
    status, answer = await submit(svc, body)
    assert status == 400
    assert message in answer["error"]
    assert json.loads((await svc.get("/v1/jobs"))[1])["jobs"] == []


async def test_past_the_queue_new_jobs_are_429(tmp_path: Path, server: FaultServer) -> None:
    server.add_file("a.bin", make_payload(64 << 10))
    server.add_file("b.bin", make_payload(1000))
    async with running(tmp_path / "cache", max_downloads=1, max_queue=0) as svc:
        status, first = await submit(svc, {"url": server.url("a.bin", rate=128 << 10)})
        assert status == 202

        status, answer = await submit(svc, {"url": server.url("b.bin")})

        assert status == 429, answer
        assert "Retry-After" in (await svc.client.post(
            f"{svc.url}/v1/jobs", data=json.dumps({"url": server.url("b.bin")}), headers=JSON
        )).headers  # fmt: skip
        assert (await submit(svc, {"url": server.url("a.bin", rate=128 << 10)}))[0] == 200
        assert (await ended(svc, first["id"]))["state"] == "done"
    assert server.gets("b.bin") == []


async def test_cancelling_stops_the_download_and_keeps_its_part(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", rate=256 << 10)
    status, answer = await submit(svc, {"url": url})
    await started(server, "m.bin")

    async with svc.client.delete(f"{svc.url}/v1/jobs/{answer['id']}") as deleted:
        assert deleted.status == 200
        assert (await deleted.json())["state"] == "cancelled"

    for _ in range(100):  # bounded: ~1 s for the download to stop
        if all(r.finished for r in server.gets("m.bin")):
            break
        await asyncio.sleep(0.01)
    sent = server.bytes_served("m.bin")
    await asyncio.sleep(0.3)
    assert server.bytes_served("m.bin") == sent < len(payload)  # it stopped
    assert (await job(svc, answer["id"]))["state"] == "cancelled"
    assert any(name.endswith(".part") for name in leftovers(svc.service.cache_dir))
    async with svc.client.delete(f"{svc.url}/v1/jobs/{answer['id']}") as again:
        assert again.status == 409
    status, resumed = await submit(svc, {"url": url})  # the part is kept under its URL
    done = await ended(svc, resumed["id"])
    assert done["state"] == "done"
    assert done["result"]["resumed_bytes"] > 0
    assert (svc.service.cache_dir / "m.bin").read_bytes() == payload


async def test_files_carry_their_sha256_as_etag_and_repr_digest(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    status, answer = await submit(svc, {"url": url})
    assert (await ended(svc, answer["id"]))["state"] == "done"
    (svc.service.cache_dir / "hand.bin").write_bytes(b"put there by hand")  # no marker: hashed
    import base64
    import hashlib

    for name, data in (("m.bin", payload), ("hand.bin", b"put there by hand")):
        digest = hashlib.sha256(data)
        for prefix in ("/v1/files/", "/files/"):
            async with svc.client.head(f"{svc.url}{prefix}{name}") as head:
                assert head.status == 200
                assert head.headers["ETag"] == f'"{digest.hexdigest()}"'
                assert head.headers["Repr-Digest"] == (
                    f"sha-256=:{base64.b64encode(digest.digest()).decode()}:"
                )
    etag = f'"{sha256(payload)}"'
    ranged = {"Range": "bytes=10-19"}
    async with svc.client.get(f"{svc.url}/v1/files/m.bin", headers=ranged) as part:
        assert (part.status, await part.read()) == (206, payload[10:20])
    async with svc.client.get(f"{svc.url}/v1/files/m.bin",
                              headers=ranged | {"If-Range": etag}) as part:  # fmt: skip
        assert (part.status, await part.read()) == (206, payload[10:20])
    async with svc.client.get(f"{svc.url}/v1/files/m.bin",
                              headers=ranged | {"If-Range": '"other"'}) as whole:  # fmt: skip
        assert (whole.status, await whole.read()) == (200, payload)
    async with svc.client.get(f"{svc.url}/v1/files/m.bin", headers={"If-None-Match": etag}) as a:
        assert a.status == 304
        assert a.headers["ETag"] == etag
    async with svc.client.get(f"{svc.url}/v1/files/m.bin", headers={"If-Match": '"x"'}) as a:
        assert a.status == 412


async def test_post_fetch_is_a_job_waited_for(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    status, answer = await svc.post({"url": url})
    assert status == 200, answer
    assert (await job(svc, answer["job"]))["state"] == "done"


# ---- as a subprocess: a store that survives ---------------------------------------------------


@contextlib.contextmanager
def serve_process(
    cache_dir: Path, *options: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m asyncfetch serve`` with its state dir ``state`` beside the cache dir, its
    log appended to ``serve.log`` there (a pipe nobody reads would fill and stop it); killed at
    exit if still running."""
    with (cache_dir.parent / "serve.log").open("a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "asyncfetch", "serve", "--port", "0",
             "--cache-dir", str(cache_dir), "--state-dir", str(cache_dir.parent / "state"),
             "--allow-private", *options],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env or cli_env(),
        )  # fmt: skip
    try:
        assert process.stdout is not None
        found = re.search(r"https?://127\.0\.0\.1:\d+", process.stdout.readline())
        assert found, (cache_dir.parent / "serve.log").read_text()
        yield process, found.group(0)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=START_TIMEOUT_S)


def test_a_second_serve_on_the_same_state_dir_exits_saying_so(tmp_path: Path) -> None:
    with serve_process(tmp_path / "cache") as (process, _url):
        done = subprocess.run(
            [sys.executable, "-m", "asyncfetch", "serve", "--port", "0",
             "--cache-dir", str(tmp_path / "other"), "--state-dir", str(tmp_path / "state")],
            capture_output=True, text=True, timeout=30, env=cli_env(), check=False,
        )  # fmt: skip
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=START_TIMEOUT_S)
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"asyncfetch: error: another asyncfetch serve (pid {process.pid}) uses the state dir"
    )
    assert "--state-dir" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("made_by", ["another-user", "open-to-all"])
async def test_a_state_dir_others_can_write_is_refused(
    tmp_path: Path, server: FaultServer, made_by: str
) -> None:
    url = server.add_file("x.sh", b"#!/bin/sh\necho owned\n")
    state = tmp_path / "state"  # --state-dir /tmp/...: another user made it first
    state.mkdir()
    os.chmod(state, 0o777)
    store = Store(state / DB_NAME)  # ... with a job of theirs to any path
    await store.open()
    await store.call(store.add, [NewJob("k", url, (), None, "../escape.sh", False)], 1)
    await store.close()
    if made_by == "another-user":
        os.chmod(state, 0o755)
        for path in (state, *state.iterdir()):
            os.chown(path, NOBODY, NOBODY)
    service = Service(tmp_path / "cache", state_dir=state, net=NetPolicy(allow_private=True))

    with pytest.raises(DestinationError, match="state dir") as raised:
        await service.open()
    await service.jobs.store.close()

    assert "uid" in str(raised.value)
    assert not (tmp_path / "escape.sh").exists()
    assert server.requests == []


async def test_a_job_store_planted_before_a_chmod_700_is_refused(
    tmp_path: Path, server: FaultServer
) -> None:
    """The refusal says chmod 700; a store another user put in the dir while it was open to
    all stays in it after the chmod, and must not run their jobs either."""
    url = server.add_file("x.sh", b"#!/bin/sh\necho owned\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)  # ours and private now; once it was not
    store = Store(state / DB_NAME)
    await store.open()
    await store.call(store.add, [NewJob("k", url, (), None, "../escape.sh", False)], 1)
    await store.close()
    for path in state.iterdir():
        os.chown(path, NOBODY, NOBODY)  # theirs, with their job in it
    service = Service(tmp_path / "cache", state_dir=state, net=NetPolicy(allow_private=True))

    with pytest.raises(DestinationError, match="state dir") as raised:
        await service.open()
    await service.jobs.store.close()

    assert f"{DB_NAME} in it is uid {NOBODY}'s" in str(raised.value)
    assert not (tmp_path / "escape.sh").exists()
    assert server.requests == []


async def test_a_state_dir_that_is_another_users_link_is_refused(tmp_path: Path) -> None:
    """--state-dir /tmp/x, where another user made x a link to a private dir of ours: it
    passes for ours, until they point it at theirs (the store's journal is made by path)."""
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    state = tmp_path / "state"
    state.symlink_to(mine)
    os.lchown(state, NOBODY, NOBODY)
    service = Service(tmp_path / "cache", state_dir=state)

    with pytest.raises(DestinationError, match="state dir") as raised:
        await service.open()
    await service.jobs.store.close()

    assert f"a link of uid {NOBODY}'s" in str(raised.value)
    assert list(mine.iterdir()) == []


async def test_a_state_dir_below_another_users_link_is_refused_before_anything_is_made(
    tmp_path: Path,
) -> None:
    """--state-dir /tmp/x/state, where another user made /tmp/x a link to a directory of
    their choosing that we may write: refused, and nothing made where it leads."""
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (sticky / "x").symlink_to(elsewhere)
    os.lchown(sticky / "x", NOBODY, NOBODY)
    service = Service(tmp_path / "cache", state_dir=sticky / "x" / "state")

    with pytest.raises(DestinationError, match=f"a link of uid {NOBODY}'s"):
        await service.open()
    await service.jobs.store.close()

    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("owner", "mode"),
    [(NOBODY, 0o755), (NOBODY, 0o1777), (None, 0o777), (None, 0o757)],
    ids=["theirs", "theirs-sticky", "open-to-all", "others-writable"],
)
async def test_a_state_dir_under_a_directory_others_can_change_is_refused(
    tmp_path: Path, server: FaultServer, owner: int | None, mode: int
) -> None:
    """--state-dir /srv/shared/me/state, where another user owns /srv/shared or may write it
    (no sticky bit): they could move me away and put theirs, with their jobs, in its place."""
    shared = tmp_path / "shared"
    (shared / "me").mkdir(mode=0o700, parents=True)
    state = shared / "me" / "state"
    os.chmod(shared, mode)
    if owner is not None:
        os.chown(shared, owner, owner)
    service = Service(tmp_path / "cache", state_dir=state, net=NetPolicy(allow_private=True))

    with pytest.raises(DestinationError, match="state dir") as raised:
        await service.open()
    await service.jobs.store.close()

    assert f"{shared}, on the way to it, is " in str(raised.value)
    assert (f"uid {owner}'s" if owner else "chmod go-w") in str(raised.value)
    assert not state.exists()  # refused before anything was made


@pytest.mark.skipif(os.geteuid() != 0, reason="chgrp to a group of others needs root")
@pytest.mark.parametrize("group", ["shared", "private"])
async def test_a_group_writable_parent_is_refused_unless_the_group_is_the_owners_own(
    tmp_path: Path, group: str
) -> None:
    """umask 002 leaves directories group-writable: harmless where the group is the owner's
    private group (Debian's and Ubuntu's user private groups), not where others are in it."""
    shared = tmp_path / "home"
    state = shared / "me" / "state"
    (shared / "me").mkdir(mode=0o700, parents=True)
    os.chmod(shared, 0o775)
    owner = pwd.getpwuid(os.geteuid())
    assert grp.getgrgid(owner.pw_gid).gr_name == owner.pw_name  # root's group: root's alone
    os.chown(shared, -1, owner.pw_gid if group == "private" else NOBODY)
    service = Service(tmp_path / "cache", state_dir=state)

    if group == "private":
        await service.open()
        await service.close()
        assert (state / DB_NAME).is_file()
    else:
        with pytest.raises(DestinationError, match="chmod go-w"):
            await service.open()
        await service.jobs.store.close()
        assert not state.exists()  # refused before anything was made


async def test_a_state_dir_under_a_sticky_directory_like_tmp_is_accepted(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # others may add entries, but not move ours
    service = Service(tmp_path / "cache", state_dir=shared / "me" / "state")

    await service.open()
    await service.close()

    assert (shared / "me" / "state" / DB_NAME).is_file()


async def test_parents_the_service_makes_are_private_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "home" / ".local" / "state" / "asyncfetch" / "service"
    old = os.umask(0o002)  # user-private groups: mkdir -p would make them 0775, refused
    try:
        service = Service(tmp_path / "cache", state_dir=state)
        await service.open()
        await service.close()
    finally:
        os.umask(old)

    made = [state, *state.parents][: len(state.relative_to(tmp_path).parts)]
    assert [stat.S_IMODE(path.stat().st_mode) for path in made] == [0o700] * len(made)


def test_accepted_jobs_survive_a_stop_and_resume_from_their_parts(
    tmp_path: Path, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", rate=256 << 10)
    with serve_process(tmp_path / "cache") as (process, service_url):
        accepted = _http(f"{service_url}/v1/jobs", {"url": url})
        for _ in range(200):  # bounded: ~10 s
            if server.bytes_served("m.bin") > 500_000:  # the journal is saved every second
                break
            time.sleep(0.05)
        process.kill()
        process.wait(timeout=30)
    with serve_process(tmp_path / "cache") as (process, service_url):
        done = _wait_done(service_url, [accepted["id"]])[0]
        process.send_signal(signal.SIGTERM)
    assert done["state"] == "done", done
    assert done["runs"] == 2
    assert done["result"]["resumed_bytes"] > 0
    assert (tmp_path / "cache" / "m.bin").read_bytes() == payload


def _wait_done(service_url: str, ids: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [_http(f"{service_url}/v1/jobs/{id_}") for id_ in ids]
        if all(j["state"] not in ("queued", "running") for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs did not end: {[j['state'] for j in jobs]}")
        time.sleep(0.1)


KILLS = 3
FILES = 6


def test_kill_9_at_random_moments_loses_no_job_and_runs_none_twice_at_once(
    tmp_path: Path, server: FaultServer
) -> None:
    rng = random.Random(1812)
    payloads = {f"f{n}.bin": make_payload(1536 << 10, seed=n) for n in range(FILES)}
    for name, data in payloads.items():
        server.add_file(name, data)
    orders = [{"url": server.url(name, rate=384 << 10), "sha256": sha256(data)}
              for name, data in payloads.items()]  # fmt: skip
    ids: list[str] = []
    lives: list[float] = []  # when each service was started, monotonic
    for life in range(KILLS + 1):
        lives.append(time.monotonic())
        with serve_process(tmp_path / "cache", "--max-downloads", "3") as (process, url):
            if life == 0:
                ids = [j["id"] for j in _http(f"{url}/v1/jobs", orders)["jobs"]]
            if life < KILLS:
                time.sleep(rng.uniform(2.0, 4.0))  # the journal is saved every second
                process.kill()
                process.wait(timeout=30)
                continue
            jobs = _wait_done(url, ids)
            process.send_signal(signal.SIGTERM)

    assert [j["state"] for j in jobs] == ["done"] * FILES, jobs
    for name, data in payloads.items():
        assert (tmp_path / "cache" / name).read_bytes() == data
        gets = [r for r in server.gets(name) if r.range != (0, 0)]
        by_life: dict[int, list[RequestRecord]] = {}
        for record in gets:
            life = max(n for n, began in enumerate(lives) if record.timestamp >= began)
            by_life.setdefault(life, []).append(record)
        seen = sorted(by_life)
        for life, following in zip(seen, seen[1:], strict=False):  # a service's requests ended
            ended = max(r.finished or float("inf") for r in by_life[life])  # before the next's
            assert ended <= min(r.timestamp for r in by_life[following]), (name, by_life)
        interrupted = len(by_life) - 1  # kills that caught the file in flight
        resent = sum(r.bytes_sent for r in gets) - len(data)
        assert resent <= interrupted * len(data) // 2, f"{name}: {resent} bytes sent again"
    db = sqlite3.connect(tmp_path / "state" / "jobs.sqlite3")
    try:
        for id_ in ids:
            kinds = [k for (k,) in db.execute("SELECT kind FROM events WHERE job = ?", (id_,))]
            assert kinds.count("done") == 1, kinds
            assert kinds[0] == "queued"
            assert kinds[-1] == "done"
    finally:
        db.close()


async def test_the_same_url_signed_again_is_the_same_job(
    svc: Running, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", rate=512 << 10)
    status, first = await submit(svc, {"url": f"{url}&X-Amz-Signature=one"})
    assert status == 202

    status, again = await submit(svc, {"url": f"{url}&X-Amz-Signature=two"})

    assert (status, again["id"]) == (200, first["id"])
    assert "two" not in json.dumps(again)
    assert "one" not in json.dumps(again)
    assert (await ended(svc, first["id"]))["state"] == "done"


@pytest.mark.parametrize("cached", ["same", "other"])
def test_get_takes_the_services_digest_only_as_agreement_with_the_primarys(
    tmp_path: Path, server: FaultServer, payload: bytes, cached: str
) -> None:
    server.add_file("m.bin", payload)
    primary = server.url("m.bin", rate=1 << 20, digest="repr")  # announces its SHA-256
    cache = tmp_path / "cache"
    cache.mkdir()
    other = bytes(b ^ 0xFF for b in payload)  # the same size, other bytes, its own digest
    (cache / "m.bin").write_bytes(payload if cached == "same" else other)
    with serve_process(cache) as (process, service_url):
        mirror = f"{service_url}/v1/files/m.bin"
        done = subprocess.run(
            [sys.executable, "-m", "asyncfetch", "get", primary, "--mirror", mirror,
             "-o", str(tmp_path / "out.bin"), "--json", "--no-progress"],
            capture_output=True, text=True, timeout=60, env=cli_env(), check=False,
        )  # fmt: skip
        process.terminate()
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.bin").read_bytes() == payload
    from_mirror = json.loads(done.stdout)["bytes_by_mirror"].get(mirror, 0)
    if cached == "same":
        assert from_mirror > 0  # its Repr-Digest agrees with the primary's: used
        assert "different files" not in done.stderr
    else:
        assert from_mirror == 0  # announces another digest: never used
        assert f"{mirror} announces SHA-256 {sha256(other)}" in done.stderr  # its Repr-Digest


async def test_an_untrusted_certificate_says_how_to_make_the_service_trust_it(
    svc: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve has no --cacert or --insecure: the hint names the variables it follows."""
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_ca))  # not the upstream's CA
    with FaultServer(tls=True) as upstream:
        url = upstream.add_file("m.bin", make_payload(1 << 16))
        status, body = await svc.post({"url": url})
        _, accepted = await submit(svc, {"url": url, "name": "again.bin"})
        failed = await ended(svc, accepted["id"])
    assert (status, body["type"]) == (502, "CertificateError")
    for message in (body["error"], failed["error"]):
        assert url in message
        assert "start asyncfetch serve with REQUESTS_CA_BUNDLE or SSL_CERT_FILE" in message
        assert "--cacert" not in message
        assert "--insecure" not in message
