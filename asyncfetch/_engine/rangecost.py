"""Whether ranged requests cost more than they bring, and how large ranges should then be.

Each ranged request pays a fixed cost before its first byte (a round trip, a new connection
when the server closes each one after its answer, a server's own per-request work: ~0.3 s an
answer for an S3 emulator) and then streams at some rate. A range of ``C`` bytes takes
``cost + C / rate``: when the cost is a large share of that, the download spends its time
asking. The engine records each range's cost (time to its first byte) and rate (bytes over
the time after it); once a few ranges agree that the cost is over :data:`TRIGGER_SHARE` of a
range's time, the ranges still to fetch are merged into ranges large enough that it is under
:data:`COST_SHARE`. They stay at least as many as the connections (a server that caps each
connection, or a fast first second such as nginx's ``limit_rate`` burst that makes small ranges
look cheap to stream, still needs them all) unless the cost is queueing: when requests wait
for each other (the slowest first byte over :data:`QUEUED` times the quickest and at least
:data:`QUEUE_SPREAD` later, as a server that answers one range at a time), more connections
only queue, and ranges grow down to one stream for all that is left. Each source is measured
on its own: a mirror without a request cost next to a primary with one made them look like a
queue (first bytes at 0.01 and 0.3 s), and the whole download went down to one stream.

A verified download hashes in file order, so bytes received past the hashed prefix wait, and
what waits when the last range lands is hashed after it: with one range per connection, all
but one connection's share of the file. Ranges are therefore also kept small enough that this
tail and the requests' costs balance: ``n`` ranges cost ``n * cost / connections`` seconds
spread over the connections, and leave about ``connections * range / hash_rate`` seconds of
hashing, least in sum at ``range = sqrt(remaining * cost * hash_rate) / connections``. They
are cut in whole rounds (a multiple of the connections), so no round ends with idle
connections. (512 MiB, 16 connections, 40 ms round trip: one 31 MiB range each left 0.25 s of
hashing after the last byte.)

Pure logic, no I/O.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

MiB = 1 << 20
MIN_SAMPLES = 3
MIN_COST = 0.02  # seconds: less is a loopback's or a LAN's noise, not worth larger ranges
MIN_SAMPLE_BYTES = 64 << 10  # smaller ranges (a tail piece) say little of the rate
TRIGGER_SHARE = 0.25  # act when a range's fixed cost is over this share of its time
COST_SHARE = 0.1  # and make ranges large enough that it is under this share
QUEUED = 2.0  # the slowest first byte this many times the quickest: requests wait in line
QUEUE_SPREAD = 0.1  # ... and later by this many seconds at least (less is a busy server's noise)


@dataclass(frozen=True)
class Advice:
    """Larger ranges: ``chunk`` bytes each, and why (:attr:`note`, for ``--json``)."""

    chunk: int
    cost: float
    rate: float
    before: int
    queued: bool = False

    @property
    def note(self) -> str:
        """One line: what was measured and what changed."""
        why = "requests queue at the server" if self.queued else "every connection kept"
        return (
            f"fewer, larger: per-request cost {self.cost:.2f} s against "
            f"{self.before / MiB:.1f} MiB ranges at {self.rate / 1e6:.1f} MB/s per connection; "
            f"ranges of {self.chunk / MiB:.0f} MiB from then on ({why})"
        )


@dataclass
class RangeCost:
    """The measured cost and rate of completed ranged requests."""

    costs: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def record(self, cost: float, nbytes: int, seconds: float) -> None:
        """A range of ``nbytes`` came ``cost`` seconds after it was asked, then took
        ``seconds`` to arrive."""
        if nbytes < MIN_SAMPLE_BYTES or seconds <= 0 or cost < 0:
            return
        self.costs.append(cost)
        self.rates.append(nbytes / seconds)
        self.sizes.append(nbytes)

    def advice(
        self,
        current: int = 0,
        *,
        remaining: int | None = None,
        connections: int = 1,
        hash_rate: float = 0.0,
    ) -> Advice | None:
        """Larger ranges when the ones measured pay a fixed cost over TRIGGER_SHARE of their
        time (and over MIN_COST), sized so that it falls under COST_SHARE, and (unless the
        requests queue) no larger than ``remaining`` bytes over the ``connections``, nor, when
        the download hashes at ``hash_rate`` bytes per second, than balances the requests'
        cost against the hash's tail; None otherwise, or when they would not be larger than
        ``current`` bytes."""
        if len(self.costs) < MIN_SAMPLES:
            return None
        cost = statistics.median(self.costs)
        rate = statistics.median(self.rates)
        size = int(statistics.median(self.sizes))
        if cost < MIN_COST or cost / (cost + size / rate) <= TRIGGER_SHARE:
            return None
        chunk = int(cost * rate * (1 - COST_SHARE) / COST_SHARE)
        slowest, quickest = max(self.costs), min(self.costs)
        queued = slowest > QUEUED * quickest and slowest - quickest >= QUEUE_SPREAD
        if remaining is not None and not queued:
            chunk = _whole_rounds(remaining, chunk, max(connections, 1), cost, hash_rate)
        elif remaining is not None:
            chunk = min(chunk, remaining)  # one stream for the rest, said as what it is
        if chunk <= max(current, size):
            return None
        return Advice(chunk=chunk, cost=cost, rate=rate, before=size, queued=queued)


def _whole_rounds(
    remaining: int, chunk: int, connections: int, cost: float, hash_rate: float
) -> int:
    """The range size nearest ``chunk`` (made no larger than the hash's tail allows, see the
    module's docstring) that cuts ``remaining`` bytes into whole rounds of ``connections``
    ranges: the number of rounds is rounded to the nearest, so a range may come out up to
    half again as large as ``chunk``."""
    if hash_rate > 0:
        chunk = min(chunk, int(math.sqrt(remaining * cost * hash_rate) / connections))
    rounds = max(round(remaining / (max(chunk, 1) * connections)), 1)
    return -(-remaining // (rounds * connections))
