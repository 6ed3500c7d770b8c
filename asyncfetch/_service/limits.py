"""``asyncfetch serve``'s limits on work, so no client holds the service: how many downloads
may wait for a slot (past that, 429 with ``Retry-After``), and the speed under which a
download gives its slot back (a source that trickles would hold it for ever: the read
timeout only notices silence).

The speed floor is ``get``'s low-speed rule (``_transport/lowspeed``) applied to a whole
download, checked once a second.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from .._errors import FetchError, FetchTimeout, InvalidRequest
from .._models import ProgressEvent
from .._transport.lowspeed import LowSpeed

DEFAULT_MAX_QUEUE = 64
DEFAULT_MIN_SPEED = 1024  # bytes/s
DEFAULT_MIN_SPEED_WINDOW = 60.0  # seconds
QUEUE_RETRY_AFTER = 10  # seconds
CHECK_EVERY = 1.0  # seconds between looks at the meter

T = TypeVar("T")


class QueueFull(FetchError):
    """Every download slot is taken and the queue is full: ask again later.

    Attributes:
        retry_after: seconds to wait before asking again.
    """

    def __init__(self, message: str, *, url: str | None, retry_after: int) -> None:
        super().__init__(message, url=url)
        self.retry_after = retry_after


class TooSlow(FetchTimeout):
    """A download moved fewer bytes than the speed floor asks over its window; it stopped,
    its part file kept for a resume."""

    def __init__(self, message: str, *, url: str | None) -> None:
        super().__init__(message, url=url, retryable=False)


@dataclass(frozen=True, kw_only=True)
class SpeedFloor:
    """The speed under which a download gives its slot back.

    Args:
        bytes_per_s: the least average speed over each window.
        window: seconds each judgement covers (also the longest a silent start may take).
    """

    bytes_per_s: int = DEFAULT_MIN_SPEED
    window: float = DEFAULT_MIN_SPEED_WINDOW

    def __post_init__(self) -> None:
        if isinstance(self.bytes_per_s, bool) or self.bytes_per_s < 1:
            raise InvalidRequest(f"the speed floor must be at least 1 byte/s, got {self}")
        if not (math.isfinite(self.window) and self.window > 0):
            raise InvalidRequest(f"the speed floor's window must be positive, got {self}")


class Meter:
    """A progress callback that counts the bytes a download receives, and notices when all
    of them are in (then hashing and renaming follow, which are not judged)."""

    def __init__(self) -> None:
        self.received = 0
        self.complete = False

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "bytes":
            self.received += event.delta
        if event.kind in ("verified", "done") or (
            event.total is not None and event.done >= event.total
        ):
            self.complete = True


async def within_floor(
    work: Coroutine[Any, Any, T], floor: SpeedFloor | None, meter: Meter, url: str
) -> T:
    """Run ``work``; when ``meter`` shows fewer bytes than ``floor`` asks over a window
    before the body is complete, cancel it (its part file stays) and raise TooSlow.

    The rule is ``get``'s low-speed rule (:class:`~asyncfetch._transport.lowspeed.LowSpeed`)
    applied to the whole download: ``get`` retries one slow connection, the service frees
    the slot a slow download holds."""
    task = asyncio.ensure_future(work)
    if floor is None:
        return await task
    loop = asyncio.get_running_loop()
    watch = LowSpeed(floor.bytes_per_s, floor.window, loop.time(), meter.received)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(floor.window, CHECK_EVERY))
            if done:
                return task.result()
            if not watch.check(loop.time(), meter.received) and not meter.complete:
                break
    except BaseException:
        await _stop(task)
        raise
    await _stop(task)
    if not task.cancelled() and task.exception() is None:
        return task.result()  # it finished as it was stopped
    raise TooSlow(
        f"{url}: under the service's floor of {floor.bytes_per_s} bytes/s for {floor.window:g} s"
        "; the download stopped to free its slot and resumes "
        "from its part file when asked again",
        url=url,
    )


async def _stop(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (its part file closed, its lock let go)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
