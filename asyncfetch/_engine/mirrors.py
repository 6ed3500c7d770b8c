"""Sources of one file: speed estimates, health, benching and choice. Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

BENCH_INITIAL = 0.5
BENCH_MAX = 30.0
REHOME_FACTOR = 1.5


@dataclass
class SourceState:
    """What we know about one source (a URL serving the file) during a download."""

    url: str
    bytes_received: int = 0
    seconds_busy: float = 0.0
    failures: int = 0
    consecutive_failures: int = 0
    benched_until: float = 0.0
    last_error: str | None = None
    dropped: str | None = None
    ranges: bool = True
    workers: int = 0

    @property
    def speed(self) -> float:
        """Measured bytes per second per connection (0 before any bytes arrived)."""
        return self.bytes_received / self.seconds_busy if self.seconds_busy > 0 else 0.0

    def usable(self, now: float, *, ranged: bool = False) -> bool:
        """Not dropped, not benched at ``now`` and, if ``ranged``, serving byte ranges."""
        return self.alive(ranged=ranged) and self.benched_until <= now

    def alive(self, *, ranged: bool = False) -> bool:
        """Not dropped and, if ``ranged``, serving byte ranges."""
        return self.dropped is None and (self.ranges or not ranged)


@dataclass
class MirrorBoard:
    """The scoreboard of all sources: who is healthy, who is fast, where a worker goes next."""

    sources: list[SourceState] = field(default_factory=list)

    @classmethod
    def of(cls, urls: list[str]) -> MirrorBoard:
        """A board for ``urls``, in order of preference."""
        return cls([SourceState(url) for url in urls])

    def get(self, url: str) -> SourceState:
        """The state of ``url``'s source."""
        for source in self.sources:
            if source.url == url:
                return source
        raise KeyError(url)

    def home_for(self, worker: int) -> str:
        """The source worker number ``worker`` starts on: connections spread round-robin."""
        live = [s for s in self.sources if s.alive(ranged=True)] or self.sources
        home = live[worker % len(live)]
        home.workers += 1
        return home.url

    def rehome(self, url: str, now: float) -> str:
        """Where a worker whose home is ``url`` should go next.

        A connection leaves a dropped source, and moves to the source giving the most bytes
        per second per connection when that is over 1.5 times what its own gives. Each source
        keeps at least one connection, so every speed stays measured; where a server caps its
        total rather than each connection, its speed per connection falls as connections
        arrive, and the split settles where both give about the same.
        """
        current = self.get(url)
        usable = [s for s in self.sources if s.usable(now, ranged=True)]
        best = max(usable, key=lambda s: s.speed, default=current)
        if best is current:
            return url
        if current.alive(ranged=True) and (
            current.workers <= 1
            or current.speed <= 0
            or best.speed <= REHOME_FACTOR * current.speed
        ):
            return url
        current.workers -= 1
        best.workers += 1
        return best.url

    def leave(self, url: str) -> None:
        """A worker whose home is ``url`` is done."""
        self.get(url).workers -= 1

    def pick(self, preferred: str, now: float, *, ranged: bool = True) -> str | None:
        """The source to use now.

        ``preferred`` when usable, else the fastest usable one, else (all benched) the one
        back soonest; None when every source is dropped. With ``ranged``, only sources that
        serve byte ranges count.
        """
        if self.get(preferred).usable(now, ranged=ranged):
            return preferred
        usable = [s for s in self.sources if s.usable(now, ranged=ranged)]
        if usable:
            return max(usable, key=lambda s: s.speed).url
        alive = [s for s in self.sources if s.alive(ranged=ranged)]
        return min(alive, key=lambda s: s.benched_until).url if alive else None

    def others_usable(self, url: str, now: float) -> bool:
        """Whether a source other than ``url`` can serve a range right now."""
        return any(s.usable(now, ranged=True) for s in self.sources if s.url != url)

    def alive(self, *, ranged: bool = True) -> bool:
        """Whether any source (serving ranges, by default) is not dropped."""
        return any(s.alive(ranged=ranged) for s in self.sources)

    def dropped(self) -> dict[str, str]:
        """Each dropped source, and why it was dropped."""
        return {s.url: s.dropped for s in self.sources if s.dropped is not None}

    def fallback(self) -> str | None:
        """A live source that serves only the whole file, if any."""
        return next((s.url for s in self.sources if s.alive() and not s.ranges), None)

    def next_usable_at(self) -> float | None:
        """When the first benched source comes back, or None if every source is dropped."""
        waiting = [s.benched_until for s in self.sources if s.dropped is None]
        return min(waiting, default=None)

    def record_bytes(self, url: str, nbytes: int, seconds: float) -> None:
        """``nbytes`` arrived from ``url`` in ``seconds`` of one connection's time."""
        source = self.get(url)
        source.bytes_received += nbytes
        source.seconds_busy += seconds
        if nbytes:
            source.consecutive_failures = 0

    def record_failure(
        self, url: str, message: str, now: float, retry_after: float | None = None
    ) -> float:
        """Note a failure and bench the source; returns how long it is benched."""
        source = self.get(url)
        source.failures += 1
        source.consecutive_failures += 1
        source.last_error = message
        backoff = min(BENCH_INITIAL * 2 ** (source.consecutive_failures - 1), BENCH_MAX)
        pause = retry_after if retry_after is not None else backoff
        source.benched_until = max(source.benched_until, now + pause)
        return pause

    def drop(self, url: str, reason: str) -> None:
        """Stop using ``url`` for this download (it serves a different file, or bad bytes)."""
        source = self.get(url)
        source.dropped = reason
        source.last_error = reason

    def failures(self) -> dict[str, str]:
        """Each source's last failure, for error messages."""
        return {s.url: s.last_error for s in self.sources if s.last_error}

    def bytes_by_source(self) -> dict[str, int]:
        """Bytes received from each source."""
        return {s.url: s.bytes_received for s in self.sources}
