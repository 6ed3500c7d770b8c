"""What nginx served during a run, from its access log.

Each server logs one line per request in :data:`LOG_FORMAT`: the time the line was written,
the request's duration, status, bytes sent (headers included), the Range asked for and the
request line. A request's start is ``msec - request_time``; a run is charged with the
requests that *started* while it ran, so requests of an earlier run that was killed (whose
lines nginx writes only when it notices the client is gone) are never counted against it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LOG_FORMAT = '$msec $request_time $status $bytes_sent "$http_range" "$request"'
LINE = re.compile(r'(?P<msec>[\d.]+) (?P<rt>[\d.]+) (?P<status>\d+) (?P<sent>\d+) '
                  r'"(?P<range>[^"]*)" "(?P<request>[^"]*)"')  # fmt: skip
SETTLE_QUIET_S = 0.3
SETTLE_MAX_S = 3.0
POLL_S = 0.05
SLACK_S = 0.002  # $msec and $request_time have millisecond resolution


@dataclass(frozen=True)
class Request:
    """One logged request."""

    started: float
    status: int
    bytes_sent: int
    range: str
    request: str


def size(path: Path) -> int:
    """The log's current size (0 when nginx has not created it yet)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def settle(paths: Iterable[Path]) -> None:
    """Wait until no log grew for ``SETTLE_QUIET_S`` (at most ``SETTLE_MAX_S``).

    nginx logs an aborted request only when it notices the client left, which with
    ``limit_rate`` can be up to a timer tick after the client exits.
    """
    paths = list(paths)
    deadline = time.monotonic() + SETTLE_MAX_S
    sizes = [size(p) for p in paths]
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        now = [size(p) for p in paths]
        if now != sizes:
            sizes, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= SETTLE_QUIET_S:
            return


def read_since(path: Path, offset: int) -> list[Request]:
    """The requests logged after byte ``offset`` of the log."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    requests = []
    for line in text.splitlines():
        match = LINE.fullmatch(line.strip())
        if match:
            started = float(match["msec"]) - float(match["rt"])
            requests.append(Request(started, int(match["status"]), int(match["sent"]),
                                    match["range"], match["request"]))  # fmt: skip
    return requests


def started_between(requests: list[Request], start: float, end: float) -> list[Request]:
    """The requests that started in ``[start, end]`` (wall-clock seconds, ``time.time``)."""
    return [r for r in requests if start - SLACK_S <= r.started <= end + SLACK_S]


def wall_clock() -> float:
    """The clock nginx's ``$msec`` uses."""
    return time.time()
