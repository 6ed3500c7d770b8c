"""Server-Sent Events of a running ``asyncfetch serve``: a job's stream and the service's, and
``Last-Event-ID`` across a kill -9 and restart."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp

from asyncfetch._service.events import PROGRESS_PER_S
from tests.faultserver import FaultServer, make_payload
from tests.service.test_app import Running, _http, running
from tests.service.test_jobs import serve_process, submit

Frame = tuple[str | None, str, dict[str, Any]]  # (id, event, data)


def parse(lines: Iterator[str]) -> Iterator[Frame]:
    """SSE frames from lines (comments skipped)."""
    id_, kind, data = None, "message", ""
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield id_, kind, json.loads(data)
            id_, kind, data = None, "message", ""
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            if field == "id":
                id_ = value
            elif field == "event":
                kind = value
            elif field == "data":
                data += value


async def read_stream(svc: Running, path: str, **headers: str) -> list[Frame]:
    async with svc.client.get(svc.url + path, headers=headers,
                              timeout=aiohttp.ClientTimeout(total=30)) as answer:  # fmt: skip
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "text/event-stream"
        lines = [line.decode() async for line in answer.content]
    return list(parse(iter(lines)))


async def test_a_jobs_stream_carries_its_states_and_paced_progress(
    tmp_path: Path, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", rate=512 << 10, reset_after=300_000, times=1)  # ~2 s, one retry
    async with running(tmp_path / "cache") as svc:
        status, job = await submit(svc, {"url": url})
        began = time.monotonic()
        frames = await read_stream(svc, f"/v1/jobs/{job['id']}/events")
        took = time.monotonic() - began

    kinds = [kind for _, kind, _ in frames if kind != "progress"]
    assert kinds[:2] == ["queued", "started"]
    assert "retry" in kinds
    assert kinds[-1] == "done"
    ids = [int(id_) for id_, kind, _ in frames if kind != "progress"]
    assert ids == sorted(ids)
    assert all(data["job"] == job["id"] for _, _, data in frames)
    progress = [data for _, kind, data in frames if kind == "progress"]
    assert progress, kinds
    assert all(id_ is None for id_, kind, _ in frames if kind == "progress")  # not kept
    assert progress[-1]["total"] == len(payload)
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)
    assert len(progress) <= took * PROGRESS_PER_S + 2


async def test_the_service_stream_replays_every_job_from_an_id(
    tmp_path: Path, server: FaultServer
) -> None:
    urls = [server.add_file(f"{n}.bin", make_payload(2000, seed=n)) for n in range(2)]
    async with running(tmp_path / "cache") as svc:
        _, answer = await submit(svc, [{"url": u} for u in urls])
        ids = [j["id"] for j in answer["jobs"]]
        frames = await read_until(svc, "/v1/events", "done", count=2)
        first_done = next(int(i) for i, kind, _ in frames if kind == "done")
        after = await read_until(svc, f"/v1/events?after={first_done}", "done")
    assert {data["job"] for _, kind, data in frames if kind == "done"} == set(ids)
    assert all(int(i) > first_done for i, kind, _ in after if i is not None)
    first_job = next(d["job"] for i, _, d in frames if i == str(first_done))
    assert [d["job"] for _, kind, d in after if kind == "done"] == [
        j for j in ids if j != first_job
    ]


async def read_until(svc: Running, path: str, kind: str, count: int = 1) -> list[Frame]:
    """Frames of the stream at ``path`` until ``count`` of ``kind`` have come."""
    frames: list[Frame] = []
    async with svc.client.get(svc.url + path) as stream:
        lines = []
        async for raw in stream.content:
            lines.append(raw.decode())
            frames = list(parse(iter(lines)))
            if sum(k == kind for _, k, _ in frames) >= count:
                return frames
    return frames


def _sse(url: str, last: str | None = None) -> IO[bytes]:
    headers = {"Last-Event-ID": last} if last else {}
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30)  # noqa: S310


def test_last_event_id_after_a_kill_9_gets_every_state_change_missed(
    tmp_path: Path, server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", rate=256 << 10)  # ~4 s
    with serve_process(tmp_path / "cache") as (process, service_url):
        job = _http(f"{service_url}/v1/jobs", {"url": url})
        with _sse(f"{service_url}/v1/jobs/{job['id']}/events") as stream:
            seen = []
            for frame in parse(line.decode() for line in stream):
                seen.append(frame)
                if frame[1] == "progress":
                    break
        process.kill()
        process.wait(timeout=30)
    last = next(i for i, kind, _ in reversed(seen) if i is not None)
    assert [kind for _, kind, _ in seen if kind != "progress"] == ["queued", "started"]

    with serve_process(tmp_path / "cache") as (process, service_url):
        with _sse(f"{service_url}/v1/jobs/{job['id']}/events", last) as stream:
            frames = list(parse(line.decode() for line in stream))  # ends after "done"
        process.terminate()
    states = [(i, kind, data) for i, kind, data in frames if kind != "progress"]
    assert [kind for _, kind, _ in states] == ["queued", "started", "verified", "done"]
    assert states[0][2]["why"] == "the service restarted"
    assert all(int(i) > int(last) for i, _, _ in states if i is not None)
    assert any(kind == "progress" for _, kind, _ in frames)
