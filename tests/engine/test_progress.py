"""Progress: the event order per file, ProgressStream, and the multi-file bars."""

from __future__ import annotations

import asyncio
import io
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import BatchProgress, ProgressEvent, ProgressStream
from asyncfetch._engine.progress import ProgressBar
from tests.faultserver import FaultServer, make_payload
from tests.helpers import leftovers, no_wait, sha256

KiB = 1024
ORDER = re.compile(
    r"started(,(bytes|retry|source_switched))*(,verified)?,done"
    r"|started(,(bytes|retry|source_switched))*,failed"
)


async def test_event_order_per_file_in_a_batch(
    make_server: Callable[[], FaultServer], tmp_path: Path
) -> None:
    main, mirror = make_server(), make_server()
    files = {f"f{i}.bin": make_payload(600_000 + i, seed=i) for i in range(4)}
    for name, data in files.items():
        main.add_file(name, data)
        mirror.add_file(name, data)
    policy, _ = no_wait()
    sources: list[object] = [
        main.url("f0.bin"),
        main.url("f1.bin", truncate_after=50_000, times=1),  # a retry
        {  # a primary that cuts every answer cannot be sampled: only a digest lets the
            "url": main.url("f2.bin", reset_after=1000),  # mirror take over
            "mirrors": [mirror.url("f2.bin")],
            "sha256": sha256(files["f2.bin"]),
        },
        main.url("missing.bin"),  # fails after starting
        "nonsense",  # fails before any download starts
    ]
    events: dict[str, list[ProgressEvent]] = defaultdict(list)

    def record(event: ProgressEvent) -> None:
        events[event.url].append(event)

    items = [
        item
        async for item in asyncfetch.fetch_many(
            sources, dest_dir=tmp_path, chunk_size=128 * KiB, connections=2, retry=policy,  # type: ignore[arg-type]
            progress=record,
        )
    ]  # fmt: skip

    assert len(items) == 5
    for url, sequence in events.items():
        assert ORDER.fullmatch(",".join(e.kind for e in sequence)), (url, sequence)
    kinds = {url.split("/")[-1]: [e.kind for e in seq] for url, seq in events.items()}
    assert "retry" in kinds["f1.bin?truncate_after=50000&times=1"]
    assert "source_switched" in kinds["f2.bin?reset_after=1000"]
    assert kinds["missing.bin"][-1] == "failed"
    assert kinds["nonsense"] == ["started", "failed"]
    for name, data in files.items():
        if name != "f3.bin":
            done = next(seq for url, seq in events.items() if f"/{name}" in url)
            assert sum(e.delta for e in done if e.kind == "bytes") == len(data)
            assert done[-1].done == done[-1].total == len(data)


@pytest.mark.parametrize("sha", [False, True], ids=["probed-hit", "digest-hit"])
async def test_a_cache_hit_starts_with_started_too(
    server: FaultServer, tmp_path: Path, sha: bool
) -> None:
    data = make_payload(100_000)
    url = server.add_file("m.bin", data)
    digest = {"sha256": sha256(data)} if sha else {}
    await asyncfetch.fetch(url, tmp_path / "m.bin", **digest)  # type: ignore[arg-type]
    events: list[ProgressEvent] = []

    result = await asyncfetch.fetch(url, tmp_path / "m.bin", progress=events.append, **digest)  # type: ignore[arg-type]

    assert result.cached
    assert [e.kind for e in events] == ["started", "done"]
    assert ORDER.fullmatch(",".join(e.kind for e in events))
    assert all((e.total, e.done) == (len(data), len(data)) for e in events)


async def test_a_failed_probe_of_an_existing_target_sends_started_and_failed(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", make_payload(100_000))
    await asyncfetch.fetch(url, tmp_path / "m.bin")  # the marker vouches for it: probed next
    server.remove_file("m.bin")
    events: list[ProgressEvent] = []

    with pytest.raises(asyncfetch.HTTPStatusError):
        await asyncfetch.fetch(url, tmp_path / "m.bin", progress=events.append)

    assert [e.kind for e in events] == ["started", "failed"]
    assert "404" in events[-1].message


async def test_progress_stream_yields_a_batch_events_until_closed(
    server: FaultServer, tmp_path: Path
) -> None:
    urls = [server.add_file(f"f{i}.bin", make_payload(300_000, seed=i)) for i in range(3)]
    seen: list[ProgressEvent] = []

    async def watch(stream: ProgressStream) -> None:
        async for event in stream:
            seen.append(event)

    with ProgressStream() as stream:
        watcher = asyncio.create_task(watch(stream))
        async for item in asyncfetch.fetch_many(urls, dest_dir=tmp_path, progress=stream):
            assert item.ok
    await asyncio.wait_for(watcher, 5)  # the iteration ended with the close

    for url in urls:
        kinds = [e.kind for e in seen if e.url == url]
        assert kinds[0] == "started"
        assert kinds[-2:] == ["verified", "done"]
        assert sum(e.delta for e in seen if e.url == url) == 300_000


async def test_progress_stream_merges_bytes_when_the_reader_lags() -> None:
    stream = ProgressStream()
    stream(ProgressEvent("started", "u", 100))
    for done in (10, 30, 60):
        stream(ProgressEvent("bytes", "u", 100, done, 10 if done == 10 else done - 10 * 3))
    stream(ProgressEvent("bytes", "v", 5, 5, 5))
    stream(ProgressEvent("bytes", "u", 100, 100, 40))
    stream(ProgressEvent("done", "u", 100, 100))
    stream.close()
    stream(ProgressEvent("failed", "u"))  # after close: dropped

    got = [event async for event in stream]

    assert [(e.kind, e.url, e.done, e.delta) for e in got] == [
        ("started", "u", 0, 0),
        ("bytes", "u", 60, 10 + 0 + 30),
        ("bytes", "v", 5, 5),
        ("bytes", "u", 100, 40),
        ("done", "u", 100, 0),
    ]


async def test_progress_stream_fed_from_another_thread(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("m.bin", make_payload(200_000))
    stream = ProgressStream()

    def blocking_download() -> None:
        try:
            asyncfetch.download(url, tmp_path / "m.bin", progress=stream)
        finally:
            stream.close()

    worker = asyncio.get_running_loop().run_in_executor(None, blocking_download)
    kinds = [event.kind async for event in stream]
    await worker
    assert kinds[0] == "started"
    assert kinds[-1] == "done"


def test_batch_bars_count_bytes_and_files() -> None:
    out = io.StringIO()
    bars = BatchProgress(3, out)
    for url, size in (("http://h/a.bin", 1000), ("http://h/b.bin", 3000)):
        bars(ProgressEvent("started", url))
        bars(ProgressEvent("bytes", url, size, size // 2, size // 2))
    assert "a.bin" in out.getvalue()  # a bar per file in flight
    assert "b.bin" in out.getvalue()
    bars(ProgressEvent("bytes", "http://h/a.bin", 1000, 1000, 500))
    bars(ProgressEvent("done", "http://h/a.bin", 1000, 1000))
    bars(ProgressEvent("started", "http://h/c.bin"))
    bars(ProgressEvent("failed", "http://h/c.bin", message="404"))
    bars(ProgressEvent("done", "http://h/b.bin", 3000, 3000))  # e.g. resumed: no bytes events
    bars.close()
    last = out.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert "3/3 files, 1 failed" in last
    assert "4.00k/4.00k" in last  # 4000 bytes in all, counted once each, in decimal kB


def test_batch_bars_draw_at_most_max_bars_files() -> None:
    out = io.StringIO()
    bars = BatchProgress(None, out, max_bars=2)
    for name in "abc":
        bars(ProgressEvent("started", f"http://h/{name}.bin"))
    assert "a.bin" in out.getvalue()
    assert "b.bin" in out.getvalue()
    assert "c.bin" not in out.getvalue()
    bars(ProgressEvent("done", "http://h/a.bin", 0, 0))
    bars(ProgressEvent("started", "http://h/d.bin"))
    assert "d.bin" in out.getvalue()  # a finished file's place is reused
    bars.close()
    assert "1 files" in out.getvalue().replace("\r", "\n").splitlines()[-1]


async def test_a_resumed_download_reports_the_kept_bytes_and_its_bar_ends_full(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(1 << 20)
    server.add_file("m.bin", data)
    url = server.url("m.bin", reset_after=100_000, times=1)
    dest = tmp_path / "m.bin"
    with pytest.raises(asyncfetch.FetchError):  # leaves the first 100_000 bytes in the part
        await asyncfetch.fetch(url, dest, chunk_size="256K", connections=1, retry=0)
    out = io.StringIO()
    bar = ProgressBar("m.bin", out)
    events: list[ProgressEvent] = []

    def record(event: ProgressEvent) -> None:
        events.append(event)
        bar(event)

    result = await asyncfetch.fetch(url, dest, progress=record, chunk_size="64K")

    assert result.resumed_bytes == 100_000
    assert [(e.kind, e.done, e.delta) for e in events[:2]] == [
        ("started", 0, 0),
        ("bytes", 100_000, 0),  # right after the part opens: where the download starts from
    ]
    assert sum(e.delta for e in events) == len(data) - 100_000
    assert events[-1].done == len(data)
    last = out.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert "100%" in last
    assert "1.05M/1.05M" in last  # 1 MiB in decimal MB, as the command line prints sizes


# progress=True / False, as torch.hub's callers pass it ----------------------------------------


def test_progress_false_draws_nothing(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_payload(300_000)
    url = server.add_file("quiet.bin", data)
    asyncfetch.download(url, tmp_path / "quiet.bin", progress=False)
    assert (tmp_path / "quiet.bin").read_bytes() == data
    assert capsys.readouterr().err == ""


def test_progress_true_draws_a_bar_on_stderr(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_payload(300_000)
    url = server.add_file("loud.bin", data)
    asyncfetch.download(url, tmp_path / "loud.bin", progress=True)
    assert (tmp_path / "loud.bin").read_bytes() == data
    err = capsys.readouterr().err
    assert "loud.bin" in err
    assert "100%" in err


@pytest.mark.parametrize("progress", ["yes", 1])
def test_progress_that_is_neither_a_bool_nor_callable_is_refused(
    server: FaultServer, tmp_path: Path, progress: object
) -> None:
    url = server.add_file("x.bin", b"x" * 1000)
    with pytest.raises(asyncfetch.InvalidRequest, match="progress must be"):
        asyncfetch.download(url, tmp_path / "x.bin", progress=progress)  # type: ignore[arg-type]
    with pytest.raises(asyncfetch.InvalidRequest, match="progress must be"):
        asyncfetch.fetch_many([url], dest_dir=tmp_path, progress=progress)  # type: ignore[arg-type]
    assert not server.gets("x.bin")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("progress", [True, False])
async def test_batch_progress_true_draws_bars_and_false_none(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], progress: bool
) -> None:
    urls = [server.add_file(f"b{i}.bin", make_payload(200_000, seed=i)) for i in range(3)]
    items = [i async for i in asyncfetch.fetch_many(urls, dest_dir=tmp_path, progress=progress)]
    assert all(item.ok for item in items)
    err = capsys.readouterr().err
    assert ("3/3 files" in err) is progress
    if not progress:
        assert err == ""


# a callback that raises ------------------------------------------------------------------------


class Boom(Exception):
    """What the callbacks below raise."""


def raising_on(kind: str) -> Callable[[ProgressEvent], None]:
    def explode(event: ProgressEvent) -> None:
        if event.kind == kind:
            raise Boom(f"boom at {kind}")

    return explode


@pytest.mark.parametrize("sha", [False, True], ids=["no-digest", "digest"])
@pytest.mark.parametrize("kind", ["verified", "done"])
async def test_a_callback_raising_once_the_file_is_in_place_is_logged_not_a_failure(
    server: FaultServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    sha: bool,
) -> None:
    data = make_payload(300_000)
    url = server.add_file("m.bin", data)
    digest = {"sha256": sha256(data)} if sha else {}

    result = await asyncfetch.fetch(url, tmp_path / "m.bin", progress=raising_on(kind), **digest)  # type: ignore[arg-type]

    assert (tmp_path / "m.bin").read_bytes() == data
    assert result.sha256 == sha256(data)
    warning = next(r.getMessage() for r in caplog.records if "progress callback" in r.getMessage())
    assert "raising_on.<locals>.explode" in warning
    assert url in warning
    assert f"boom at {kind}" in warning
    server.reset_log()
    again = await asyncfetch.fetch(url, tmp_path / "m.bin", **digest)  # type: ignore[arg-type]
    assert again.cached  # the marker was written before the callback ran
    assert not server.gets("m.bin")


async def test_a_callback_raising_on_bytes_fails_the_download_and_keeps_the_part(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", make_payload(300_000))

    with pytest.raises(Boom):
        await asyncfetch.fetch(url, tmp_path / "m.bin", progress=raising_on("bytes"))

    assert not (tmp_path / "m.bin").exists()
    assert any(name.endswith(".part") for name in leftovers(tmp_path))
