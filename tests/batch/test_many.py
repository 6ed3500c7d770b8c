"""fetch_many(): many files under one connection budget, against loopback FaultServers."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

import asyncfetch
from asyncfetch import BatchItem, HTTPStatusError, IntegrityError, InvalidRequest, ProgressEvent
from tests.faultserver import FaultServer, RequestRecord, make_payload
from tests.helpers import cli_env, leftovers, no_wait, sha256

KiB = 1024
MiB = 1 << 20


async def collect(batch: AsyncIterator[BatchItem]) -> list[BatchItem]:
    """Every item of a batch, in the order they came out."""
    return [item async for item in batch]


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` every 20 ms; fail the test if it is not true within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def peak_overlap(records: list[RequestRecord]) -> int:
    """The most of these requests the server was answering at one moment."""
    edges = sorted(
        [(r.timestamp, 1) for r in records] + [(r.finished or r.timestamp, -1) for r in records],
        key=lambda edge: (edge[0], edge[1]),
    )
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


async def test_200_small_and_4_large_files_stay_within_the_caps(
    make_server: Callable[[], FaultServer], tmp_path: Path
) -> None:
    hosts = [make_server(), make_server()]
    expected: dict[str, bytes] = {}
    sources: list[str] = []
    for i in range(200):
        host, name = hosts[i % 2], f"small{i}.bin"
        expected[name] = make_payload(1000 + 37 * i, seed=i)
        host.add_file(name, expected[name])
        sources.append(host.url(name, delay=0.02))  # every request stays in flight a while
    for i in range(4):
        host, name = hosts[i % 2], f"large{i}.bin"
        expected[name] = make_payload(2 * MiB, seed=1000 + i)
        host.add_file(name, expected[name])
        sources.insert(50 * i, host.url(name, rate=2 * MiB))  # per-connection cap

    items = await collect(
        asyncfetch.fetch_many(
            sources,
            dest_dir=tmp_path,
            max_files=24,
            connections=7,
            per_host=4,
            chunk_size=256 * KiB,
        )  # fmt: skip
    )

    assert sorted(item.index for item in items) == list(range(204))
    assert all(item.ok for item in items), [item.error for item in items if not item.ok]
    for name, data in expected.items():
        assert (tmp_path / name).read_bytes() == data
    assert [h.max_concurrent for h in hosts] == [4, 4]  # the per-host cap, reached, not passed
    assert peak_overlap(hosts[0].requests + hosts[1].requests) <= 7  # the total cap
    for i in range(200):
        assert len(hosts[i % 2].gets(f"small{i}.bin")) == 1  # a small file takes one connection
    for i in range(4):
        gets = hosts[i % 2].gets(f"large{i}.bin")
        assert peak_overlap(gets) >= 2, gets  # a large one gets more


async def test_failures_come_out_as_items_and_the_rest_succeed(
    server: FaultServer, tmp_path: Path
) -> None:
    good = {f"ok{i}.bin": make_payload(50_000 + i, seed=i) for i in range(5)}
    for name, data in good.items():
        server.add_file(name, data)
    corrupt = make_payload(70_000, seed=99)
    server.add_file("corrupt.bin", corrupt)
    policy, _ = no_wait()
    sources: list[object] = [server.url(name) for name in good]
    sources[1:1] = [
        server.url("missing.bin"),
        {"url": server.url("corrupt.bin", flip_byte=100), "sha256": sha256(corrupt)},
        "not a url",
    ]

    items = await collect(
        asyncfetch.fetch_many(sources, dest_dir=tmp_path, retry=policy)  # type: ignore[arg-type]
    )

    by_index = {item.index: item for item in items}
    assert len(items) == len(sources) == len(by_index)
    assert isinstance(by_index[1].error, HTTPStatusError)
    assert by_index[1].error.status == 404
    assert isinstance(by_index[2].error, IntegrityError)
    assert isinstance(by_index[3].error, InvalidRequest)
    assert by_index[3].url == "not a url"
    with pytest.raises(HTTPStatusError):
        by_index[1].unwrap()
    good_items = [item for item in items if item.ok]
    assert sorted(item.result.path.name for item in good_items if item.result) == sorted(good)
    assert leftovers(tmp_path) == sorted(good)  # nothing at the failed targets, no parts


async def test_fail_fast_cancels_the_rest_and_raises(server: FaultServer, tmp_path: Path) -> None:
    for i in range(3):
        server.add_file(f"slow{i}.bin", make_payload(MiB, seed=i))
    slow = [server.url(f"slow{i}.bin", stall_after=10_000) for i in range(3)]
    sources = [*slow, server.url("missing.bin")]

    started = time.monotonic()
    with pytest.raises(HTTPStatusError, match="missing.bin"):
        await collect(asyncfetch.fetch_many(sources, dest_dir=tmp_path, fail_fast=True))

    assert time.monotonic() - started < 10
    assert not any((tmp_path / f"slow{i}.bin").exists() for i in range(3))
    await wait_until(lambda: server.in_flight == 0)  # the stalled connections were closed


async def stall_everything(
    server: FaultServer, count: int, size: int = MiB
) -> tuple[list[str], dict[str, bytes]]:
    """Files whose first 4 responses each send 100 kB, then stall until the client leaves."""
    files = {f"f{i}.bin": make_payload(size, seed=i) for i in range(count)}
    for name, data in files.items():
        server.add_file(name, data)
    urls = [server.url(name, stall_after=100_000, times=4) for name in files]
    return urls, files


async def test_cancelling_the_consumer_stops_all_and_keeps_partials(
    server: FaultServer, tmp_path: Path
) -> None:
    urls, files = await stall_everything(server, 5)
    options = {"dest_dir": tmp_path, "max_files": 5, "connections": 20, "chunk_size": 256 * KiB}

    async def consume() -> None:
        async for _ in asyncfetch.fetch_many(urls, **options):  # type: ignore[arg-type]
            raise AssertionError("no file can finish while every response stalls")

    consumer = asyncio.create_task(consume())
    await wait_until(lambda: sum(r.outcome == "stalled" for r in server.requests) == 20)
    await asyncio.sleep(0.1)  # let the client take in what was sent
    cancelled_at = time.monotonic()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer

    assert time.monotonic() - cancelled_at < 2  # promptly
    await wait_until(lambda: server.in_flight == 0)  # every connection closed
    assert not any((tmp_path / name).exists() for name in files)
    assert sum(name.endswith(".part") for name in leftovers(tmp_path)) == 5
    server.reset_log()

    items = await collect(asyncfetch.fetch_many(urls, **options))  # type: ignore[arg-type]

    assert all(item.ok for item in items)
    for item in items:
        assert item.result is not None
        resumed = item.result.resumed_bytes
        assert 0 < resumed <= 4 * 100_000  # bytes received before the cancel were kept
        assert server.bytes_served(item.url.split("/")[-1].split("?")[0]) == MiB - resumed
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data
    assert leftovers(tmp_path) == sorted(files)


async def test_break_under_aclosing_stops_the_rest(server: FaultServer, tmp_path: Path) -> None:
    server.add_file("quick.bin", make_payload(10_000))
    urls, files = await stall_everything(server, 3)
    batch = asyncfetch.fetch_many([server.url("quick.bin"), *urls], dest_dir=tmp_path)

    async with contextlib.aclosing(batch):
        async for item in batch:
            assert item.ok
            await wait_until(lambda: sum(r.outcome == "stalled" for r in server.requests) >= 3)
            break

    await wait_until(lambda: server.in_flight == 0)  # the stalled downloads were stopped
    names = leftovers(tmp_path)
    assert [n for n in names if not n.endswith((".part", ".part.json"))] == ["quick.bin"]
    assert sum(n.endswith(".part") for n in names) == len(files)


async def test_429_slows_every_download_from_that_host_only(
    make_server: Callable[[], FaultServer], tmp_path: Path
) -> None:
    a, b = make_server(), make_server()
    a.add_file("a0.bin", make_payload(300_000, seed=1))
    a.add_file("a1.bin", make_payload(300_000, seed=2))
    b.add_file("b.bin", make_payload(300_000, seed=3))
    policy, sleeps = no_wait()
    throttled = a.url("a0.bin", status=429, retry_after=17, times=1)
    sources = [throttled, b.url("b.bin"), a.url("a1.bin")]
    waits_at: dict[tuple[str, str], int] = {}

    def progress(event: ProgressEvent) -> None:
        waits_at[event.kind, event.url.rsplit("/", 1)[-1]] = len(sleeps.waits)

    items = await collect(
        asyncfetch.fetch_many(
            sources, dest_dir=tmp_path, max_files=1, retry=policy, progress=progress
        )
    )

    assert all(item.ok for item in items)
    assert 17.0 in sleeps.waits  # the throttled request itself waited Retry-After
    b_waits = waits_at["done", "b.bin"] - waits_at["started", "b.bin"]
    a1_waits = waits_at["done", "a1.bin"] - waits_at["started", "a1.bin"]
    assert b_waits == 0  # another host is not slowed
    assert a1_waits >= 2  # every request of another download from host A waited
    assert all(16 < w <= 17 for w in sleeps.waits)


async def test_own_session_is_used_and_left_open(server: FaultServer, tmp_path: Path) -> None:
    data = make_payload(200_000)
    url = server.add_file("m.bin", data)
    async with aiohttp.ClientSession(headers={"X-Pipeline": "mine"}) as session:
        items = await collect(asyncfetch.fetch_many([url], dest_dir=tmp_path, session=session))
        assert not session.closed
    assert items[0].ok
    assert all(r.headers.get("X-Pipeline") == "mine" for r in server.requests)
    assert (tmp_path / "m.bin").read_bytes() == data


@dataclass
class Checkpoint:
    """A user's own record type, with the attributes a source needs."""

    url: str
    sha256: str | None = None
    name: str | None = None


async def test_source_forms_and_destinations(server: FaultServer, tmp_path: Path) -> None:
    data = {n: make_payload(20_000 + n, seed=n) for n in range(5)}
    urls = {n: server.add_file(f"file{n}.bin", d) for n, d in data.items()}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    async def sources() -> AsyncIterator[object]:
        yield urls[0]
        yield asyncfetch.Source(urls[1], name="renamed.bin", sha256=sha256(data[1]))
        yield {"url": urls[2], "dest": "sub/dir/two.bin"}
        yield {"url": urls[3], "dest": elsewhere / "three.bin"}
        yield Checkpoint(urls[4], sha256=sha256(data[4]), name="four.bin")

    items = await collect(
        asyncfetch.fetch_many(sources(), dest_dir=tmp_path / "out")  # type: ignore[arg-type]
    )

    assert all(item.ok for item in items), [item.error for item in items]
    out = tmp_path / "out"
    assert (out / "file0.bin").read_bytes() == data[0]
    assert (out / "renamed.bin").read_bytes() == data[1]
    assert (out / "sub" / "dir" / "two.bin").read_bytes() == data[2]  # made under dest_dir
    assert (elsewhere / "three.bin").read_bytes() == data[3]
    assert (out / "four.bin").read_bytes() == data[4]


async def test_a_relative_dest_without_dest_dir_gets_its_directories_too(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_payload(20_000)
    url = server.add_file("x.txt", data)
    monkeypatch.chdir(tmp_path)

    items = await collect(asyncfetch.fetch_many([asyncfetch.Source(url, dest="nested/x.txt")]))

    assert items[0].ok, items[0].error
    assert items[0].path == tmp_path / "nested" / "x.txt"
    assert (tmp_path / "nested" / "x.txt").read_bytes() == data


async def test_default_destination_is_the_torch_hub_cache(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = make_payload(30_000)
    url = server.add_file("resnet.pth", data)

    items = await collect(asyncfetch.fetch_many([url]))

    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet.pth"
    assert items[0].path == expected
    assert expected.read_bytes() == data


async def test_two_sources_for_one_destination(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("m.bin", make_payload(10_000))
    items = await collect(asyncfetch.fetch_many([url, url], dest_dir=tmp_path))
    assert [item.ok for item in sorted(items, key=lambda i: i.index)] == [True, False]
    failed = next(item for item in items if not item.ok)
    assert isinstance(failed.error, InvalidRequest)
    assert "also goes to" in str(failed.error)


async def test_bad_sources_and_options(server: FaultServer, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="max_files"):
        asyncfetch.fetch_many([], max_files=0)
    with pytest.raises(InvalidRequest, match="connections"):
        asyncfetch.fetch_many([], per_host=0)
    bad: list[object] = [42, {"url": "http://x/y", "sha265": "typo"}, {"mirrors": []}]
    items = await collect(asyncfetch.fetch_many(bad, dest_dir=tmp_path))  # type: ignore[arg-type]
    assert all(isinstance(item.error, InvalidRequest) for item in items)
    messages = sorted(str(item.error) for item in items)
    assert any("sha265" in m for m in messages)
    assert any("no url" in m for m in messages)
    assert await collect(asyncfetch.fetch_many([], dest_dir=tmp_path)) == []


async def test_a_failing_source_iterable_ends_the_batch_with_its_error(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", make_payload(10_000))

    def sources() -> Iterator[str]:
        yield url
        raise RuntimeError("the manifest reader broke")

    with pytest.raises(RuntimeError, match="manifest reader"):
        await collect(asyncfetch.fetch_many(sources(), dest_dir=tmp_path))


# the command line ---------------------------------------------------------------------------


def batch_cli(*args: str, **popen: object) -> subprocess.Popen[str]:
    """Start ``python -m asyncfetch batch ARGS`` with pipes for stdout and stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "asyncfetch", "batch", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
        **({"stderr": subprocess.PIPE} | popen),  # type: ignore[call-overload]
    )


def test_cli_batch_prints_a_table_and_names_each_failure(
    server: FaultServer, tmp_path: Path
) -> None:
    files = {f"w{i}.bin": make_payload(100_000 * (i + 1), seed=i) for i in range(3)}
    lines = []
    for name, data in files.items():
        server.add_file(name, data)
        lines.append(f'[[file]]\nurl = "{server.url(name)}"\nsha256 = "{sha256(data)}"\n')
    lines.append(f'[[file]]\nurl = "{server.url("gone.bin")}"\n')
    wrong = "0" * 64
    lines.append(f'[[file]]\nurl = "{server.url("w0.bin")}"\nname = "b.bin"\nsha256 = "{wrong}"\n')
    manifest = tmp_path / "zoo.toml"
    manifest.write_text("\n".join(lines))
    out = tmp_path / "out"

    proc = batch_cli(str(manifest), "--dir", str(out), "--jobs", "2")
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 1
    table = stdout.splitlines()
    assert table[0].split() == ["file", "size", "time", "speed", "status"]
    assert len(table) == 1 + 5 + 1
    assert table[1].startswith(str(out / "w0.bin"))
    assert table[1].endswith("ok")
    assert "97.7 KiB" in table[1]
    assert table[4].startswith(str(out / "gone.bin"))
    assert table[4].endswith("FAILED")
    assert table[5].endswith("FAILED")
    assert table[-1] == "3 of 5 files ok, 585.9 KiB"
    errors = stderr.splitlines()
    assert len(errors) == 2
    assert all(line.startswith("asyncfetch: error: ") for line in errors)
    assert any(server.url("gone.bin") in e and "404" in e for e in errors)
    assert any("SHA-256 mismatch" in e for e in errors)
    assert leftovers(out) == sorted(files)
    for name, data in files.items():
        assert (out / name).read_bytes() == data


def test_cli_batch_json_prints_one_object_per_file(server: FaultServer, tmp_path: Path) -> None:
    data = make_payload(50_000)
    url = server.add_file("a.bin", data)
    manifest = tmp_path / "urls.txt"
    manifest.write_text(f"{url}\n{server.url('nope.bin')}\n")

    proc = batch_cli(str(manifest), "--dir", str(tmp_path / "out"), "--json")
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 1
    records = {r["url"]: r for r in map(json.loads, stdout.splitlines())}
    assert records[url]["status"] == "ok"
    assert records[url]["sha256"] == sha256(data)
    assert records[server.url("nope.bin")]["status"] == "failed"
    assert records[server.url("nope.bin")]["error_type"] == "HTTPStatusError"
    assert stderr.count("\n") == 1  # the failure, and no progress bars off a terminal
    assert "nope.bin" in stderr


def test_cli_batch_all_ok_exits_zero(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("a.bin", make_payload(10_000))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"url": url, "dest": "x/y.bin"}) + "\n")
    proc = batch_cli(str(manifest), "--dir", str(tmp_path / "out"))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stderr == ""
    assert "1 of 1 files ok" in stdout
    assert (tmp_path / "out" / "x" / "y.bin").exists()


def test_cli_batch_relative_dest_is_under_the_current_directory_made_if_missing(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("s.txt", make_payload(10_000))
    (tmp_path / "manifests").mkdir()
    manifest = tmp_path / "manifests" / "m.toml"
    manifest.write_text(f'[[file]]\nurl = "{url}"\ndest = "relout/s.txt"\n')
    proc = batch_cli(str(manifest), "--no-progress", cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert (tmp_path / "relout" / "s.txt").exists()


def test_cli_batch_bad_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.txt"
    manifest.write_text("https://h/a\nnot-a-url\n")
    proc = batch_cli(str(manifest))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert stderr.startswith("asyncfetch: error: ")
    assert f"{manifest}:2:" in stderr
    assert stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("signum", "status", "stopped"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_cli_batch_interrupt_keeps_partials_and_a_rerun_resumes(
    server: FaultServer, tmp_path: Path, signum: int, status: int, stopped: str
) -> None:
    files = {f"s{i}.bin": make_payload(MiB, seed=i) for i in range(3)}
    for name, data in files.items():
        server.add_file(name, data)
    manifest = tmp_path / "urls.txt"
    manifest.write_text("".join(server.url(n, stall_after=200_000, times=1) + "\n" for n in files))
    out = tmp_path / "out"

    proc = batch_cli(str(manifest), "--dir", str(out), "--json")
    try:
        deadline = time.monotonic() + 30
        while sum(r.outcome == "stalled" for r in server.requests) < 3:
            assert time.monotonic() < deadline, "the downloads never got going"
            time.sleep(0.02)
        time.sleep(0.2)  # let the client take in what was sent
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait(10)

    assert proc.returncode == status, stderr
    assert stderr == (
        "asyncfetch: 0 of 3 files ok, 0 failed, 3 interrupted or not started\n"
        f"asyncfetch: {stopped}; run the same command again to resume\n"
    )
    assert stdout == ""
    names = leftovers(out)
    assert not any(name in names for name in files)  # nothing incomplete at a target
    assert sum(name.endswith(".part") for name in names) == 3

    again = batch_cli(str(manifest), "--dir", str(out), "--json")
    stdout, stderr = again.communicate(timeout=60)
    assert again.returncode == 0, stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    assert len(records) == 3
    assert all(r["resumed_bytes"] > 0 for r in records)
    for name, data in files.items():
        assert (out / name).read_bytes() == data


def test_cli_batch_fail_fast_stops_at_the_first_failure(
    server: FaultServer, tmp_path: Path
) -> None:
    urls, files = [], {f"s{i}.bin": make_payload(MiB, seed=i) for i in range(2)}
    for name, data in files.items():
        server.add_file(name, data)
        urls.append(server.url(name, stall_after=1000))
    manifest = tmp_path / "urls.txt"
    manifest.write_text("\n".join([*urls, server.url("gone.bin")]) + "\n")
    out = tmp_path / "out"

    proc = batch_cli(str(manifest), "--dir", str(out), "--fail-fast", "--no-progress")
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 1
    assert "gone.bin" in stderr
    assert "stopped after the first failure with 0 of 3 files complete" in stderr
    assert "0 of 1 files ok" in stdout
    assert not any((out / name).exists() for name in files)


def test_cli_batch_draws_bars_on_a_terminal(server: FaultServer, tmp_path: Path) -> None:
    urls = [server.add_file(f"t{i}.bin", make_payload(300_000, seed=i)) for i in range(2)]
    manifest = tmp_path / "urls.txt"
    manifest.write_text("\n".join(urls) + "\n")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        proc = batch_cli(str(manifest), "--dir", str(tmp_path / "out"), stderr=follower)
        stdout, _ = proc.communicate(timeout=60)
        os.close(follower)
        drawn = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's other end is closed
            while chunk := os.read(leader, 65536):
                drawn += chunk
    finally:
        os.close(leader)
    assert proc.returncode == 0
    assert b"2/2 files" in drawn  # the total bar
    assert b"t0.bin" in drawn  # a file's bar
    assert "2 of 2 files ok" in stdout
