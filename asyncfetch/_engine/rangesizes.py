"""Per source, what its ranges cost and how large to take them from it: the bookkeeping over
:mod:`.rangecost`'s advice (servers differ in what a request costs, so each source is measured
on its own)."""

from __future__ import annotations

import logging
import time

from .._userinfo import redact
from .planner import Scheduler
from .rangecost import RangeCost

log = logging.getLogger("asyncfetch")


class RangeSizes:
    """Each source's range cost, the range size advised for it so far, and the note that
    says how ranges were adapted (``FetchResult.ranges``)."""

    def __init__(self, url: str, connections: int) -> None:
        self.url = url  # the download's, for the log
        self.connections = connections
        self.note: str | None = None  # how ranges were adapted to their cost
        self._costs: dict[str, RangeCost] = {}  # per source: servers differ in what a request costs
        self._chunk_now: dict[str, int] = {}  # per source, the range size advised so far
        self._notes: dict[str, str] = {}  # the same as note, per source

    def chunk(self, source: str) -> int:
        """The range size advised for ``source`` so far (0: as planned)."""
        return self._chunk_now.get(source, 0)

    def range_done(
        self,
        source: str,
        cost: float,
        nbytes: int,
        answered: float,
        hash_rate: float,
        scheduler: Scheduler | None,
        *,
        one_source: bool,
    ) -> None:
        """Record a whole range's cost and rate; when ranges from ``source`` cost more than
        they bring, fetch larger ones from it (see :mod:`.rangecost`): with one source the
        ranges still to fetch are re-cut, with several each worker on ``source`` takes
        that much at a time, so a source whose requests are slow gets fewer, larger ranges
        and the others keep theirs."""
        costs = self._costs.setdefault(source, RangeCost())
        costs.record(cost, nbytes, time.monotonic() - answered)
        if scheduler is None:
            return
        remaining = sum(task.remaining for task in scheduler)
        advice = costs.advice(
            self._chunk_now.get(source, 0),
            remaining=remaining,
            connections=self.connections,
            hash_rate=hash_rate,
        )
        if advice is None:
            return
        self._chunk_now[source] = advice.chunk
        scheduler.request_cost = max(scheduler.request_cost, advice.cost)
        if one_source:
            pending = scheduler.coarsen(advice.chunk)
            note = advice.note + ("; one stream for the rest" if pending <= 1 else "")
        else:
            note = f"{redact(source)}: {advice.note}"
        self._notes[source] = note
        self.note = "; ".join(self._notes.values())
        log.info("%s: ranges cost more than they bring: %s", redact(self.url), note)
