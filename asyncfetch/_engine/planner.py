"""Byte-range planning: which chunks to fetch, and work stealing (which bytes are on disk:
:class:`~asyncfetch._storage.extents.Extents`).

Pure logic, no I/O: easy to test with property tests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .._models import ByteRange

MiB = 1 << 20
FIRST_CHUNK = 1 * MiB
DEFAULT_CHUNK = 16 * MiB
MIN_SPLIT = 1 * MiB
MIN_TAKEOVER = 64 << 10
MIN_CAPPED = 256 << 10
OBSERVE_FOR = 1.0
SPLIT_WATCH = 0.2
SPLIT_AFTER = 0.5


def plan_chunks(
    gaps: Iterable[ByteRange], *, connections: int, chunk_size: int | None = None
) -> list[ByteRange]:
    """Cut the missing ranges into chunks for the workers, in file order.

    The first round of chunks is small and each later round twice as large, up to
    ``chunk_size``: the in-order hash can start almost at once, and large files still need
    few requests. Near the end chunks shrink again, to what is left divided by the
    connections (never below the first round's size), so all connections finish at about the
    same time instead of a few large last chunks holding the tail. An explicit ``chunk_size``
    is used as is throughout.
    """
    gaps = list(gaps)
    workers = max(connections, 1)
    largest = chunk_size or DEFAULT_CHUNK
    left = sum(gap.length for gap in gaps)
    chunks: list[ByteRange] = []
    for gap in gaps:
        start = gap.start
        while start < gap.end:
            step = largest if chunk_size else _guided_step(len(chunks), left, workers)
            end = min(start + step, gap.end)
            chunks.append(ByteRange(start, end))
            left -= end - start
            start = end
    return chunks


def _equal_parts(span: ByteRange, most: int) -> list[ByteRange]:
    """``span`` cut into the fewest parts of at most ``most`` bytes, equal to a byte."""
    count = max(-(-span.length // max(most, 1)), 1)
    bounds = [span.start + span.length * i // count for i in range(count + 1)]
    return [ByteRange(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _guided_step(planned: int, left: int, workers: int) -> int:
    ramp = FIRST_CHUNK << min(planned // workers, 20)
    share = -(-left // workers)  # guided self-scheduling: the tail evens out across workers
    return max(FIRST_CHUNK, min(DEFAULT_CHUNK, ramp, share))


@dataclass(eq=False)
class Task:
    """One worker's job: bytes ``pos`` up to ``stop``. A thief may lower ``stop``.

    ``pos`` is how far the bytes are written; ``reached`` how far they are received (the
    worker may hold a batch not yet written), so a thief never takes bytes already in hand.
    """

    start: int
    pos: int
    stop: int
    reached: int = 0
    began: float = 0.0
    began_at: int = 0
    expected: float = 0.0  # the speed of the source the task went to (0: unknown)

    def begin(self, now: float) -> None:
        """An attempt at this task starts now, from ``pos``."""
        self.began, self.began_at, self.reached = now, self.pos, self.pos

    def rate(self, now: float) -> float:
        """Bytes per second received in the current attempt (0 before any)."""
        elapsed = now - self.began
        got = max(self.pos, self.reached) - self.began_at
        return got / elapsed if elapsed > 0 and got > 0 else 0.0

    def likely_rate(self, now: float) -> float:
        """The measured rate once watched a moment, else its source's speed."""
        measured = self.rate(now) if now - self.began >= SPLIT_WATCH else 0.0
        return measured or self.expected

    @property
    def remaining(self) -> int:
        """Bytes not yet received."""
        return max(self.stop - max(self.pos, self.reached), 0)

    def byte_range(self) -> ByteRange:
        """What is still to fetch, as a ByteRange."""
        return ByteRange(self.pos, max(self.pos, self.stop))


class Scheduler:
    """Hands chunks to workers in file order; when none are left, steals from the slowest.

    A finished worker takes the next chunk, cut short when its source is more than twice
    slower than the fastest connection: to what it moves in the time all the work left
    should take, so it never holds a large last chunk. Near the end an idle worker takes
    work from the chunk in flight that would finish last: all of what is left when the
    thief's source is more than twice as fast, else the second half. So no slow connection
    holds the tail.
    """

    def __init__(self, chunks: Iterable[ByteRange], *, min_split: int = MIN_SPLIT) -> None:
        self._pending: deque[Task] = deque(Task(c.start, c.start, c.end) for c in chunks)
        self._active: set[Task] = set()
        self._min_split = min_split
        self.request_cost = 0.0  # seconds a request pays before its first byte, once known

    def coarsen(self, chunk: int) -> int:
        """Re-cut the pending tasks into fewer, of up to ``chunk`` bytes each (ranges cost
        more than they bring: see :mod:`.rangecost`); returns how many are pending now.

        Each run of adjacent pending bytes is cut into equal parts, so that connections
        handed them finish together (merging whole tasks greedily left parts of 16, 24 and
        31 MiB side by side, and the tail waited on the largest).
        """
        runs: list[list[int]] = []
        for task in self._pending:
            if runs and runs[-1][1] == task.pos:
                runs[-1][1] = task.stop
            else:
                runs.append([task.pos, task.stop])
        self._pending = deque(
            Task(part.start, part.start, part.end)
            for start, stop in runs
            for part in _equal_parts(ByteRange(start, stop), chunk)
        )
        return len(self._pending)

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._pending) + list(self._active))

    @property
    def finished(self) -> bool:
        """True when nothing is pending or in flight."""
        return not self._pending and not self._active

    def take(self, thief_speed: float = 0.0, now: float = 0.0, at_least: int = 0) -> Task | None:
        """The next task for an idle worker, or None when there is nothing worth taking.

        Args:
            thief_speed: bytes per second the idle worker's source gives one connection
                (0: unknown).
            now: the current time, to measure the speed of the tasks in flight.
            at_least: bytes the worker's source should be asked for at a time (its requests
                cost: see :mod:`.rangecost`); adjacent pending tasks are joined up to it.
        """
        if self._pending:
            task = self._take_over_unmeasured(thief_speed, now)
            task = task or self._next_pending(thief_speed, now, at_least)
        else:
            task = self._steal(thief_speed, now)
        if task is not None:
            task.expected = thief_speed
            self._active.add(task)
        return task

    def may_steal_later(self) -> bool:
        """Whether a task in flight has enough left that taking it over may pay later."""
        return any(task.remaining >= MIN_TAKEOVER for task in self._active)

    def complete(self, task: Task) -> None:
        """The worker fetched all of ``task``."""
        self._active.discard(task)

    def give_back(self, task: Task) -> None:
        """The worker stopped early: what is left goes back to the front of the queue."""
        self._active.discard(task)
        if task.stop > task.pos:
            self._pending.appendleft(Task(task.pos, task.pos, task.stop))

    def _take_over_unmeasured(self, thief_speed: float, now: float) -> Task | None:
        """While chunks are pending, take the rest of a task handed to a source of unknown
        speed (a first chunk) that proved more than twice slower than the thief: its worker
        then moves to a faster source instead of holding it a long while. Tasks handed out
        later are cut to their source's speed, so they are left alone until the end."""
        unmeasured = [t for t in self._active if t.expected <= 0 and t.remaining >= MIN_TAKEOVER]
        for victim in unmeasured:
            if self._worth_taking_over(victim, thief_speed, now, observe=SPLIT_AFTER):
                cut = victim.stop - victim.remaining
                thief = Task(cut, cut, victim.stop)
                victim.stop = cut
                return thief
        return None

    def _next_pending(self, thief_speed: float, now: float, at_least: int = 0) -> Task:
        """The next pending task (joined with the ones after it up to ``at_least`` bytes),
        its front part only if the thief could not finish all of it before the other
        connections run out of work; the rest stays first in line."""
        cap = self._fair_share(thief_speed, now)
        at_least = min(at_least, self._share_of_what_is_left())
        task = self._pending.popleft()
        while (
            self._pending and self._pending[0].pos == task.stop and task.stop - task.pos < at_least
        ):
            after = self._pending.popleft()
            task.stop = min(after.stop, task.pos + at_least)
            if task.stop < after.stop:
                self._pending.appendleft(Task(task.stop, task.stop, after.stop))
        if task.stop - task.pos > cap + MIN_CAPPED:
            cut = task.pos + cap
            self._pending.appendleft(Task(cut, cut, task.stop))
            task.stop = cut
        return task

    def _share_of_what_is_left(self) -> int:
        """The bytes left (pending and in flight) over the workers (those in flight and the
        one taking): joined ranges never grow past it, so none holds the tail alone."""
        left = sum(t.stop - t.pos for t in self._pending) + sum(t.remaining for t in self._active)
        return -(-left // (len(self._active) + 1))

    def _fair_share(self, thief_speed: float, now: float) -> int:
        """The bytes a source this fast should take next: no limit unless it is more than
        twice slower than the fastest connection in flight; then what it moves in the time
        the work left takes all connections together (at least MIN_CAPPED)."""
        rates = [task.likely_rate(now) for task in self._active]
        if thief_speed <= 0 or 2 * thief_speed >= max(rates, default=0.0):
            return 1 << 62
        left = sum(t.stop - t.pos for t in self._pending) + sum(t.remaining for t in self._active)
        seconds = left / (sum(rates) + thief_speed)
        return max(int(thief_speed * seconds), MIN_CAPPED)

    def _steal(self, thief_speed: float, now: float) -> Task | None:
        def finish_time(task: Task) -> float:
            return task.remaining / max(task.rate(now), 1.0)

        victim = max(self._active, key=finish_time, default=None)
        if victim is None or victim.remaining < MIN_TAKEOVER:
            return None
        if self._worth_taking_over(victim, thief_speed, now):
            cut = victim.stop - victim.remaining
        elif self._worth_splitting(victim, now):
            cut = victim.stop - victim.remaining // 2
        else:
            return None
        thief = Task(cut, cut, victim.stop)
        victim.stop = cut
        return thief

    def _worth_splitting(self, victim: Task, now: float) -> bool:
        """Whether a thief should take the second half of the victim's range: only when the
        victim has been watched a moment and would still need a while (a split drops the
        victim's connection at the cut, wasting what the server already sent past it)."""
        watched = SPLIT_WATCH + self.request_cost  # no byte before its cost is no stall
        if victim.remaining < 2 * self._min_split or now - victim.began < watched:
            return False
        speed = victim.rate(now)  # a split pays a request's cost: worth it for a long tail
        return speed <= 0 or victim.remaining / speed > max(SPLIT_AFTER, 8 * self.request_cost)

    @staticmethod
    def _worth_taking_over(
        victim: Task, thief_speed: float, now: float, observe: float = OBSERVE_FOR
    ) -> bool:
        """Whether a thief should take all the victim has left (the victim's connection is
        then dropped, wasting what it has in flight): only against a connection watched
        ``observe`` seconds, more than twice slower, that would still need longer than that."""
        speed = victim.rate(now)
        if speed <= 0 or now - victim.began < observe:
            return False
        return thief_speed > 2 * speed and victim.remaining / speed > observe
