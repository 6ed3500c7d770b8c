"""One download per target: many processes and threads, killed and hung lock holders."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest

import asyncfetch
from asyncfetch._storage import lock as _lock
from asyncfetch._storage.lock import TargetLock, lock_path
from tests.engine.test_resume import journaled, start_get, wait_until
from tests.faultserver import FaultServer, make_payload
from tests.helpers import cli_env, leftovers, sha256

SIZE = 1 << 20
RATE = 300_000  # per request: a 1 MiB download over 4 connections takes about a second

HOLD = """
import filelock, sys, time
lock = filelock.FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""

TOGETHER = """
import os, sys, time
from asyncfetch._storage import lock as _lock
from asyncfetch._cli.main import main
if sys.argv[1] == "unlocked":
    _lock._attempt = lambda lock: True  # a filesystem where locks silently do nothing
print("ready", file=sys.stderr, flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.005)
sys.exit(main(sys.argv[3:]))
"""


def start_together(count: int, go: Path, *argv: str, locks: bool = True) -> list[Popen]:
    """``count`` CLI processes that start at the same moment (each imports first)."""
    mode = "locked" if locks else "unlocked"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", TOGETHER, mode, str(go), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        for _ in range(count)
    ]
    for child in children:
        assert child.stderr is not None
        assert child.stderr.readline() == "ready\n"
    go.touch()
    return children


@contextlib.contextmanager
def held_elsewhere(dest: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``dest``'s lock (and doing nothing) for the block."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_path(dest))],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "held\n"
        yield child
    finally:
        child.kill()
        child.communicate(timeout=30)


def results(children: list[Popen[str]]) -> list[dict[str, object]]:
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=90)
        assert child.returncode == 0, err
        outputs.append(json.loads(out))
    return outputs


@pytest.mark.slow
def test_eight_processes_download_once(server: FaultServer, tmp_path: Path) -> None:
    data = make_payload(SIZE, seed=31)
    server.add_file("model.bin", data)
    url = server.url("model.bin", rate=RATE)
    dest = tmp_path / "model.bin"
    argv = ["get", url, "-o", str(dest), "--json", "--sha256", sha256(data)]

    outputs = results(start_together(8, tmp_path / "go", *argv, "--connections", "4"))

    assert dest.read_bytes() == data
    assert {o["sha256"] for o in outputs} == {sha256(data)}
    assert sorted(o["cached"] for o in outputs) == [False] + [True] * 7
    downloader = next(o for o in outputs if not o["cached"])
    assert all(o["elapsed"] > 0.5 * downloader["elapsed"] for o in outputs)  # they waited
    assert server.bytes_served("model.bin") == SIZE  # one download in all
    assert sum(r.method == "HEAD" for r in server.requests) == 1  # the waiters asked nothing
    (tmp_path / "go").unlink()
    assert leftovers(tmp_path) == ["model.bin"]


def test_processes_checking_a_hash_prefix_download_once(
    server: FaultServer, tmp_path: Path
) -> None:
    # check_hash downloads to NAME.unverified and renames it once the prefix matches: the
    # second process must wait for the rename, not only for the download
    data = make_payload(SIZE, seed=32)
    name = f"w-{sha256(data)[:10]}.bin"
    server.add_file(name, data)
    registry = tmp_path / "registry.toml"
    registry.write_text(f'[w]\nurl = "{server.url(name, rate=RATE)}"\ncheck_hash = true\n')
    argv = ["get", "w", "--registry", str(registry), "--dir", str(tmp_path), "--json"]

    outputs = results(start_together(2, tmp_path / "go", *argv, "--connections", "4"))

    assert (tmp_path / name).read_bytes() == data
    assert sorted(o["cached"] for o in outputs) == [False, True]
    assert server.bytes_served(name) == SIZE  # one download in all


@pytest.mark.slow
def test_threads_without_a_digest_download_once(server: FaultServer, tmp_path: Path) -> None:
    data = make_payload(SIZE, seed=32)
    server.add_file("model.bin", data)
    url = server.url("model.bin", rate=RATE)
    dest = tmp_path / "model.bin"

    def one() -> asyncfetch.FetchResult:
        return asyncfetch.download(url, dest, connections=4, chunk_size=128 << 10)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(lambda _: one(), range(8)))

    assert dest.read_bytes() == data
    assert {r.sha256 for r in outputs} == {sha256(data)}
    assert sum(not r.cached for r in outputs) == 1
    assert server.bytes_served("model.bin") == SIZE  # the others only probed: same ETag
    assert leftovers(tmp_path) == ["model.bin"]


@pytest.mark.slow
def test_a_killed_holder_does_not_block_the_waiter(server: FaultServer, tmp_path: Path) -> None:
    data = make_payload(2 * SIZE, seed=33)
    server.add_file("model.bin", data)
    url = server.url("model.bin", rate=RATE)
    dest = tmp_path / "model.bin"
    args = ("--connections", "2", "--chunk-size", "128K")
    holder = start_get(url, dest, *args)
    try:
        wait_until(lambda: journaled(dest) >= SIZE // 2 or holder.poll() is not None)
        waiter = start_get(url, dest, *args)
        time.sleep(1.0)  # the waiter is up and polling the lock
        assert waiter.poll() is None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=30)
    assert holder.returncode == -signal.SIGKILL
    on_disk = journaled(dest)

    (result,) = results([waiter])

    assert dest.read_bytes() == data
    assert isinstance(result["resumed_bytes"], int)
    assert result["resumed_bytes"] >= on_disk >= SIZE // 2  # it took over the killed part


async def test_a_hung_holder_is_given_up_on(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_payload(SIZE, seed=34)
    url = server.add_file("model.bin", data)
    dest = tmp_path / "model.bin"
    monkeypatch.setattr(_lock, "LOCK_STALE_AFTER", 0.5)
    with held_elsewhere(dest):
        past = time.time() - 10
        os.utime(lock_path(dest), (past, past))  # no heartbeat for 10 s: hung
        result = await asyncio.wait_for(asyncfetch.fetch(url, dest), 30)
    assert result.sha256 == sha256(data)


async def test_a_live_holder_is_waited_for_and_waiting_can_be_cancelled(tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    with held_elsewhere(dest):
        waiting = asyncio.create_task(TargetLock(dest).__aenter__())
        await asyncio.sleep(0.5)
        assert not waiting.done()  # the holder's lock file is fresh: keep waiting
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    async with TargetLock(dest) as lock:  # nothing leaked: free at once
        assert lock.held
        assert not lock.waited
    assert not lock_path(dest).exists()


async def test_an_old_lock_file_is_fresh_as_soon_as_it_is_taken(tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    lock_path(dest).touch()
    past = time.time() - 600
    os.utime(lock_path(dest), (past, past))  # what a kill -9 ten minutes ago leaves
    async with TargetLock(dest) as lock:
        assert lock.held
        assert time.time() - lock_path(dest).stat().st_mtime < 5  # before any heartbeat


async def test_a_holder_is_not_judged_by_the_age_of_the_file_it_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_lock, "LOCK_STALE_AFTER", 1.0)
    dest = tmp_path / "model.bin"
    with held_elsewhere(dest):  # a holder in its first moments: it has not touched the file yet
        past = time.time() - 600
        os.utime(lock_path(dest), (past, past))
        started = time.monotonic()
        waiting = asyncio.create_task(TargetLock(dest).__aenter__())
        await asyncio.sleep(0.6)
        assert not waiting.done()  # an old file alone is no reason to go ahead
        lock = await asyncio.wait_for(waiting, 10)  # untouched for 1 s while watched: hung
        assert not lock.held
        assert time.monotonic() - started >= 1.0


async def test_a_touch_while_waiting_counts_as_a_sign_of_life(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_lock, "LOCK_STALE_AFTER", 2.0)
    dest = tmp_path / "model.bin"
    with held_elsewhere(dest):
        waiting = asyncio.create_task(TargetLock(dest).__aenter__())
        for _ in range(6):  # a heartbeat every 0.5 s, for 3 s: longer than stale_after
            await asyncio.sleep(0.5)
            os.utime(lock_path(dest))
            assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting


@pytest.mark.slow
def test_a_lock_file_left_by_a_kill_still_means_one_download(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(4 * SIZE, seed=36)
    server.add_file("model.bin", data)
    url = server.url("model.bin", rate=RATE)
    dest = tmp_path / "model.bin"
    lock_path(dest).touch()
    past = time.time() - 600
    os.utime(lock_path(dest), (past, past))
    first = start_get(url, dest, "--connections", "2")
    wait_until(lambda: journaled(dest) > 0 or first.poll() is not None)
    second = start_get(url, dest, "--connections", "2")

    outputs = results([first, second])

    assert dest.read_bytes() == data
    assert [o["cached"] for o in outputs] == [False, True]  # the second waited for the first
    assert server.bytes_served("model.bin") == len(data)
    assert leftovers(tmp_path) == ["model.bin"]


async def test_holder_keeps_its_lock_file_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_lock, "HEARTBEAT", 0.05)
    dest = tmp_path / "model.bin"
    async with TargetLock(dest):
        past = time.time() - 100
        os.utime(lock_path(dest), (past, past))
        await asyncio.sleep(0.3)
        assert time.time() - lock_path(dest).stat().st_mtime < 5


@pytest.mark.slow
def test_without_working_locks_the_rename_keeps_results_correct(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(SIZE, seed=35)
    server.add_file("model.bin", data)
    url = server.url("model.bin", rate=RATE)
    dest = tmp_path / "model.bin"
    argv = ["get", url, "-o", str(dest), "--json", "--connections", "4"]

    outputs = results(start_together(4, tmp_path / "go", *argv, locks=False))

    assert server.bytes_served("model.bin") > SIZE  # they really did not wait for each other
    assert dest.read_bytes() == data
    assert {o["sha256"] for o in outputs} == {sha256(data)}
    (tmp_path / "go").unlink()
    assert leftovers(tmp_path) == ["model.bin"]


async def test_a_directory_that_cannot_hold_a_lock_file_is_not_waited_on_forever(
    server: FaultServer, tmp_path: Path
) -> None:
    """procfs answers the lock file's O_CREAT with ENOENT, which filelock takes for a lock held
    (`asyncfetch get URL -o /proc/x` waited forever): the waiter gives up, the download fails."""
    if not sys.platform.startswith("linux"):
        pytest.skip("needs Linux's /proc")
    url = server.add_file("model.bin", make_payload(SIZE, seed=35))
    started = time.monotonic()
    with pytest.raises(asyncfetch.DestinationError) as caught:
        await asyncio.wait_for(asyncfetch.fetch(url, Path("/proc/asyncfetch-test.bin")), 30)
    assert time.monotonic() - started < 10  # not the 60 s a hung holder is given
    assert "/proc" in str(caught.value)
