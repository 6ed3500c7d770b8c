"""The connection budget of a batch: caps on requests in flight, in all and per host.

Every HTTP request of every download in a batch holds one slot for as long as it runs, so
downloads compete fairly (first come, first served) and a large file's extra connections pick
up the slots that finished small files free. A host that answers 429 or sends ``Retry-After``
is paused for every download, and the number of requests it may have in flight is halved,
growing back by one for each round of requests it answers without complaint.

Pure asyncio: no HTTP here. A "host" is ``host:port``, which is what a server sees.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .._config import MAX_RETRY_AFTER, Sleep, check_connections

DEFAULT_PAUSE = 1.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_key(url: str) -> str:
    """``host:port`` of ``url`` (the scheme's default port when none is given)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = (parts.hostname or "").lower()
    return f"{host}:{port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)}"


class Gate:
    """A first-come-first-served semaphore whose capacity may change while in use."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        """Wait for a free slot and take it (in the order callers arrived)."""
        if self.in_use < self.capacity and not self._waiters:
            self.in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted, but the caller is gone: pass the slot on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back and let waiters in as far as the capacity allows."""
        self.in_use -= 1
        self._wake()

    def resize(self, capacity: int) -> None:
        """Change the capacity; slots already taken are kept until released."""
        self.capacity = capacity
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)


@dataclass
class _Host:
    gate: Gate
    paused_until: float = 0.0
    calm: int = 0  # requests answered since the last complaint, towards the next increase
    peak: int = 0


@dataclass
class ConnectionBudget:
    """Caps shared by every download of a batch.

    Args:
        total: requests in flight in all.
        per_host: requests in flight to one ``host:port``.
        sleep: how to wait out a host's pause (tests inject one that does not wait).
        clock: monotonic seconds.
    """

    total: int
    per_host: int
    sleep: Sleep = field(default=asyncio.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _all: Gate = field(init=False, repr=False)
    _hosts: dict[str, _Host] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        check_connections(self.total)
        check_connections(self.per_host)
        self._all = Gate(self.total)

    def _host(self, host: str) -> _Host:
        if host not in self._hosts:
            self._hosts[host] = _Host(Gate(self.per_host))
        return self._hosts[host]

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        """Hold one request slot for ``host`` (``host:port``) while the block runs."""
        state = self._host(host)
        await state.gate.acquire()
        try:
            await self._wait_out_pause(state)
            await self._all.acquire()
            try:
                state.peak = max(state.peak, state.gate.in_use)
                yield
            finally:
                self._all.release()
        finally:
            state.gate.release()

    async def _wait_out_pause(self, state: _Host) -> None:
        while True:
            until = state.paused_until
            remaining = until - self.clock()
            if remaining <= 0:
                return
            await self.sleep(remaining)
            if state.paused_until == until:
                return  # not paused again meanwhile (an injected sleep may not really wait)

    def pause(self, host: str, seconds: float | None) -> None:
        """``host`` asked us to slow down: pause it for everyone and halve its concurrency.

        Args:
            host: ``host:port``.
            seconds: its ``Retry-After``, or None (a short default pause).
        """
        state = self._host(host)
        wait = min(DEFAULT_PAUSE if seconds is None else seconds, MAX_RETRY_AFTER)
        state.paused_until = max(state.paused_until, self.clock() + wait)
        state.calm = 0
        state.gate.resize(max(1, state.gate.capacity // 2))

    def answered(self, host: str) -> None:
        """A request to ``host`` went through: a calmed-down host slowly gets its slots back."""
        state = self._host(host)
        if state.gate.capacity >= self.per_host:
            return
        state.calm += 1
        if state.calm >= state.gate.capacity:
            state.calm = 0
            state.gate.resize(state.gate.capacity + 1)

    def limit(self, host: str) -> int:
        """How many requests ``host`` may have in flight now."""
        return self._host(host).gate.capacity

    def peak(self, host: str) -> int:
        """The most requests that were in flight to ``host`` at once."""
        return self._host(host).peak
