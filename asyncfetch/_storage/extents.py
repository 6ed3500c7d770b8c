"""Which bytes of a file are present: sorted, disjoint byte runs. Pure, no I/O.

The part file records what it has written in one; the planner asks it for the gaps, and blame
for what each source served.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from .._models import ByteRange


class Extents:
    """A set of byte positions kept as sorted, disjoint, non-adjacent ``[start, end)`` runs."""

    def __init__(self, runs: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._total = 0  # kept up to date: asked after every write
        for start, end in runs:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        """Mark ``[start, end)`` as present, merging with touching or overlapping runs."""
        if end <= start:
            return
        i = bisect.bisect_left(self._ends, start)
        j = bisect.bisect_right(self._starts, end)
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._total += end - start - sum(self._ends[k] - self._starts[k] for k in range(i, j))
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def runs(self) -> list[tuple[int, int]]:
        """The runs, in order."""
        return list(zip(self._starts, self._ends, strict=True))

    def prefix(self) -> int:
        """How many bytes from offset 0 on are present without a gap."""
        if self._starts and self._starts[0] == 0:
            return self._ends[0]
        return 0

    def total(self) -> int:
        """How many bytes are present."""
        return self._total

    def missing(self, size: int) -> list[ByteRange]:
        """The gaps in ``[0, size)``."""
        gaps: list[ByteRange] = []
        cursor = 0
        for start, end in self.runs():
            if start >= size:
                break
            if start > cursor:
                gaps.append(ByteRange(cursor, start))
            cursor = max(cursor, end)
        if cursor < size:
            gaps.append(ByteRange(cursor, size))
        return gaps
