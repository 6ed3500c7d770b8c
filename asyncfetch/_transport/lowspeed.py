"""The low-speed rule, as curl's ``--speed-limit``/``--speed-time``: a connection that
receives fewer than ``limit`` bytes per second over ``window`` seconds is cut, so a server
trickling a byte now and then cannot hold a download for ever (only silence trips the read
timeout). Both receive paths apply it, and anything else that streams a body can: feed it the
running count of bytes received; it needs no work per byte.
"""

from __future__ import annotations

from .._config import Timeouts
from .._errors import FetchTimeout


class LowSpeed:
    """One connection's low-speed watch. Create with :meth:`of`; call :meth:`check` now and
    then (on each arrival, or from a timer), and :meth:`skip` for time spent not reading."""

    def __init__(self, limit: float, window: float, now: float, received: int = 0) -> None:
        self.limit = limit
        self.window = window
        self._quota = limit * window
        self._since = now
        self._base = received

    @classmethod
    def of(cls, timeouts: Timeouts, now: float, received: int = 0) -> LowSpeed | None:
        """The watch ``timeouts`` ask for, or None when the limit is off."""
        if not timeouts.low_speed:
            return None
        return cls(timeouts.low_speed, timeouts.low_speed_time, now, received)

    def check(self, now: float, received: int) -> bool:
        """Whether the connection keeps up: ``limit × window`` bytes came within ``window``
        seconds of the last time it had (or of the start). ``received`` counts from any
        fixed point."""
        if received - self._base >= self._quota:
            self._since, self._base = now, received
            return True
        return now - self._since < self.window

    def skip(self, seconds: float) -> None:
        """``seconds`` spent not reading (the consumer was busy) do not count."""
        self._since += max(seconds, 0.0)

    def error(self, url: str, at: int) -> FetchTimeout:
        """The retryable error for a connection cut at byte ``at`` for being too slow."""
        return FetchTimeout(
            f"{url}: timed out: under {self.limit:g} bytes/s for {self.window:g} s at byte {at} "
            "(the server trickles; the range is retried from there; Timeouts(low_speed=...) or "
            "--speed-limit sets the limit, 0 switches it off)",
            url=url,
        )
