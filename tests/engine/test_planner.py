"""Range planning, extents and work stealing (pure logic, property tests)."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncfetch._engine.planner import MiB, Scheduler, Task, plan_chunks
from asyncfetch._models import ByteRange
from asyncfetch._storage.extents import Extents

runs = st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 300)), max_size=40)


@given(runs)
def test_extents_match_a_set_of_bytes(pieces: list[tuple[int, int]]) -> None:
    extents = Extents()
    present: set[int] = set()
    for start, length in pieces:
        extents.add(start, start + length)
        present.update(range(start, start + length))
    assert extents.total() == len(present)
    flat = {b for s, e in extents.runs() for b in range(s, e)}
    assert flat == present
    starts = [s for s, _ in extents.runs()]
    ends = [e for _, e in extents.runs()]
    assert all(ends[i] < starts[i + 1] for i in range(len(starts) - 1))  # disjoint, not touching
    prefix = 0
    while prefix in present:
        prefix += 1
    assert extents.prefix() == prefix


@given(runs, st.integers(0, 6000))
def test_missing_is_the_complement(pieces: list[tuple[int, int]], size: int) -> None:
    extents = Extents((s, s + n) for s, n in pieces)
    present = {b for s, e in extents.runs() for b in range(s, e)}
    missing = {b for r in extents.missing(size) for b in range(r.start, r.end)}
    assert missing == set(range(size)) - present


@given(st.integers(1, 200 * MiB), st.integers(1, 32), st.none() | st.integers(64 << 10, 64 * MiB))
def test_chunks_cover_the_gaps_in_order(size: int, connections: int, chunk: int | None) -> None:
    gaps = [ByteRange(0, size // 3), ByteRange(size // 2, size)]
    chunks = plan_chunks(gaps, connections=connections, chunk_size=chunk)
    covered = [(c.start, c.end) for c in chunks]
    assert covered == sorted(covered)
    assert sum(c.length for c in chunks) == sum(g.length for g in gaps)
    assert all(c.length > 0 for c in chunks)
    assert all(c.length <= (chunk or 16 * MiB) for c in chunks)


def test_first_chunks_are_small_then_grow() -> None:
    chunks = plan_chunks([ByteRange(0, 1 << 30)], connections=4)
    assert [c.length for c in chunks[:4]] == [MiB] * 4
    assert chunks[4].length == 2 * MiB
    assert max(c.length for c in chunks) == 16 * MiB


@given(st.integers(1, 1 << 33), st.integers(1, 32))
def test_chunks_shrink_to_an_even_share_at_the_end(size: int, connections: int) -> None:
    left = size
    for chunk in plan_chunks([ByteRange(0, size)], connections=connections):
        assert chunk.length <= max(MiB, -(-left // connections))
        left -= chunk.length


@pytest.mark.parametrize("size", [1 << 30, 4 << 30, 1_000_000_007])
def test_equal_connections_finish_together(size: int) -> None:
    # workers at one speed take the chunks in order, each as soon as it is free: the last
    # ones end within one small chunk of each other, not one big chunk apart
    free_at = [0] * 16
    for chunk in plan_chunks([ByteRange(0, size)], connections=16):
        heapq.heapreplace(free_at, free_at[0] + chunk.length)
    assert max(free_at) - min(free_at) <= MiB


def test_idle_worker_splits_the_largest_task_in_half() -> None:
    scheduler = Scheduler([ByteRange(0, 8 * MiB)])
    first = scheduler.take()
    assert first is not None
    first.begin(now=10.0)
    thief = scheduler.take(now=10.5)
    assert thief is not None
    assert (first.start, first.stop) == (0, 4 * MiB)
    assert (thief.start, thief.stop) == (4 * MiB, 8 * MiB)


def test_bytes_in_hand_are_never_stolen() -> None:
    scheduler = Scheduler([ByteRange(0, 8 * MiB)])
    victim = scheduler.take()
    assert victim is not None
    victim.begin(now=10.0)
    victim.reached = 6 * MiB  # received, not yet written: 6 MiB in 10 s
    thief = scheduler.take(now=20.0)
    assert thief is not None
    assert thief.start == 7 * MiB
    assert victim.stop == 7 * MiB


def test_a_range_about_to_finish_is_not_split() -> None:
    scheduler = Scheduler([ByteRange(0, 8 * MiB)])
    victim = scheduler.take()
    assert victim is not None
    victim.begin(now=10.0)
    victim.reached = 4 * MiB  # 4 MiB in 0.25 s: the other 4 take another 0.25 s
    assert scheduler.take(now=10.25) is None
    assert scheduler.may_steal_later()


def test_a_range_just_started_is_not_split_yet() -> None:
    scheduler = Scheduler([ByteRange(0, 8 * MiB)])
    victim = scheduler.take()
    assert victim is not None
    victim.begin(now=10.0)
    assert scheduler.take(now=10.05) is None


def test_small_remainders_are_not_split() -> None:
    scheduler = Scheduler([ByteRange(0, MiB)])
    assert scheduler.take() is not None
    assert scheduler.take() is None


def test_a_much_faster_thief_takes_over_a_slow_connection() -> None:
    scheduler = Scheduler([ByteRange(0, 3 * MiB)])
    slow = scheduler.take()
    assert slow is not None
    slow.begin(now=100.0)
    slow.pos = 100_000  # 100 kB in 2 s: 50 kB/s
    thief = scheduler.take(thief_speed=10e6, now=102.0)
    assert thief is not None
    assert (thief.start, thief.stop) == (100_000, 3 * MiB)
    assert slow.stop == 100_000


def test_a_connection_just_started_is_not_taken_over() -> None:
    scheduler = Scheduler([ByteRange(0, 3 * MiB)])
    slow = scheduler.take()
    assert slow is not None
    slow.begin(now=100.0)
    slow.pos = 1000
    thief = scheduler.take(thief_speed=10e6, now=100.3)
    assert thief is not None
    assert thief.start == 3 * MiB - (3 * MiB - 1000) // 2  # an ordinary split, not a takeover


def test_given_back_work_is_taken_first() -> None:
    scheduler = Scheduler([ByteRange(0, MiB), ByteRange(MiB, 2 * MiB)])
    task = scheduler.take()
    assert task is not None
    task.pos = 1000
    scheduler.give_back(task)
    again = scheduler.take()
    assert again is not None
    assert (again.pos, again.stop) == (1000, MiB)
    assert not scheduler.finished
    scheduler.complete(again)
    last = scheduler.take()
    assert isinstance(last, Task)
    scheduler.complete(last)
    assert scheduler.finished


def _running(scheduler: Scheduler, speed: float, now: float) -> Task:
    """Take a task for a source of ``speed`` and let it run at that speed until ``now``."""
    task = scheduler.take(thief_speed=speed, now=0.0)
    assert task is not None
    task.begin(now=0.0)
    task.pos += int(speed * now)
    return task


def test_a_slow_source_gets_only_what_it_moves_before_the_others_finish() -> None:
    scheduler = Scheduler([ByteRange(n * 2 * MiB, (n + 1) * 2 * MiB) for n in range(8)])
    fast = [_running(scheduler, 6e6, now=0.25) for _ in range(3)]  # 1.5 MB each of 2 MiB
    slow = scheduler.take(thief_speed=0.6e6, now=0.25)
    assert slow is not None
    # 5 chunks pending and 3 tails: ~12.3 MB at 18.6 MB/s is ~0.66 s, 0.4 MB for 0.6 MB/s
    assert slow.start == 6 * MiB
    assert 300_000 < slow.stop - slow.start < 500_000
    following = scheduler.take(thief_speed=6e6, now=0.25)
    assert following is not None
    assert (following.start, following.stop) == (slow.stop, 8 * MiB)  # the rest, in order
    assert all(task.stop - task.start == 2 * MiB for task in fast)


def test_an_equally_fast_source_gets_whole_chunks() -> None:
    scheduler = Scheduler([ByteRange(n * 2 * MiB, (n + 1) * 2 * MiB) for n in range(8)])
    for _ in range(3):
        _running(scheduler, 6e6, now=0.25)
    task = scheduler.take(thief_speed=4e6, now=0.25)
    assert task is not None
    assert (task.start, task.stop) == (6 * MiB, 8 * MiB)


def test_a_first_chunk_that_proves_slow_is_taken_over_while_chunks_are_pending() -> None:
    scheduler = Scheduler([ByteRange(n * MiB, (n + 1) * MiB) for n in range(8)])
    first = scheduler.take()  # its source's speed is not known yet
    assert first is not None
    first.begin(now=0.0)
    first.pos = 300_000  # 0.5 MB/s: the rest would take 1.5 s
    thief = scheduler.take(thief_speed=6e6, now=0.6)
    assert thief is not None
    assert (thief.start, thief.stop) == (300_000, MiB)
    assert first.stop == 300_000


def test_a_chunk_cut_to_its_source_speed_is_not_taken_over_early() -> None:
    scheduler = Scheduler([ByteRange(n * MiB, (n + 1) * MiB) for n in range(8)])
    slow = _running(scheduler, 0.5e6, now=0.6)  # handed out knowing its source is slow
    thief = scheduler.take(thief_speed=6e6, now=0.6)
    assert thief is not None
    assert (thief.start, thief.stop) == (MiB, 2 * MiB)  # the next chunk
    assert slow.stop == MiB
