"""``asyncfetch serve``'s event streams: ``GET /v1/jobs/ID/events`` and ``GET /v1/events``,
Server-Sent Events.

Each state event a job's store holds (``queued``, ``started``, ``retry``, ``verified``,
``done``, ``failed``, ``cancelled``) is sent with its store id as the SSE ``id``, so a client
that reconnects with ``Last-Event-ID`` (or ``?after=ID``), to this service or to the next one on
the same state dir, gets every state change it missed, in order. Between them come ``progress``
events (no id: they are not kept), at most PROGRESS_PER_S a second per job, carrying the
library's progress (bytes on disk, size, speed); a reconnecting client gets a fresh one for each
running job at once. A job's own stream ends after its final event; the service-wide one runs
until the client leaves or the service stops.

Every line of data is one JSON object (json.dumps escapes newlines), so nothing a client sent
(a name, a URL) can start an SSE field of its own.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .jobs import ENDED_STATES, Jobs
from .store import Event

if TYPE_CHECKING:
    from .jobs import Live

PROGRESS_PER_S = 4
HEARTBEAT_S = 15.0
BATCH = 500


def _frame(kind: str, data: dict[str, Any], id_: int | None = None) -> bytes:
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _state_frame(event: Event) -> bytes:
    data = {"job": event.job, "kind": event.kind, "time": event.time, **event.data}
    return _frame(event.kind, data, event.id)


def _progress_frame(job: str, live: Live) -> bytes:
    data = {"job": job, "done": live.done, "total": live.total, "speed": round(live.speed)}
    return _frame("progress", data)


def _after(request: web.Request) -> int | None:
    """Where the client left off: Last-Event-ID, else ?after=, else None (from the start)."""
    value = request.headers.get("Last-Event-ID") or request.query.get("after")
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else None


class EventStreams:
    """The SSE handlers of one service."""

    def __init__(self, jobs: Jobs, stopping: Any) -> None:
        self.jobs = jobs
        self._stopping = stopping  # a callable: whether the service is stopping

    async def job_events(self, request: web.Request) -> web.StreamResponse:
        """One job's events, ending after its last."""
        id_ = request.match_info["id"]
        row = await self.jobs.get(id_)
        if row is None:
            body = {"error": f"no job {id_!r}; GET /v1/jobs lists them", "type": "NotFound"}
            return web.json_response(body, status=404)
        return await self._stream(request, id_)

    async def all_events(self, request: web.Request) -> web.StreamResponse:
        """Every job's events, until the client leaves."""
        return await self._stream(request, None)

    async def _stream(self, request: web.Request, job: str | None) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                             "Cache-Control": "no-cache"})  # fmt: skip
        await answer.prepare(request)
        after = _after(request) or 0
        store = self.jobs.store
        last_progress = 0.0
        last_write = time.monotonic()
        try:
            while not self._stopping():
                try:
                    events = await store.call(store.events, after, job, BATCH)
                except RuntimeError:  # the store closed: the service is stopping
                    break
                for event in events:
                    await answer.write(_state_frame(event))
                    after = event.id
                if job is not None and any(e.kind in ENDED_STATES for e in events):
                    break  # its last event
                if len(events) == BATCH:
                    continue  # more to catch up on
                now = time.monotonic()
                if now - last_progress >= 1 / PROGRESS_PER_S:
                    last_progress = now
                    for id_, live in list(self.jobs.live.items()):
                        if (job is None or id_ == job) and live.began:
                            await answer.write(_progress_frame(id_, live))
                            last_write = now
                if events:
                    last_write = now
                if now - last_write >= HEARTBEAT_S:
                    await answer.write(b": still here\n\n")
                    last_write = now
                await self.jobs.bell.wait(1 / PROGRESS_PER_S)
        except (ConnectionResetError, ConnectionError):
            return answer  # the client left
        return answer
