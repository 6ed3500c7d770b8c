"""The connection budget: fair slots per host and in all, and the host-wide pause after 429."""

from __future__ import annotations

import asyncio

import pytest

from asyncfetch import InvalidRequest
from asyncfetch._transport.budget import ConnectionBudget, Gate, host_key
from tests.helpers import Sleeps


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://127.0.0.1:8080/files/x", "127.0.0.1:8080"),
        ("https://Example.org/x?y=1", "example.org:443"),
        ("http://example.org/x", "example.org:80"),
        ("http://[::1]:9/x", "::1:9"),
    ],
)
def test_host_key_is_host_and_port(url: str, key: str) -> None:
    assert host_key(url) == key


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_gate_serves_in_arrival_order_and_never_over_capacity() -> None:
    gate = Gate(2)
    order: list[int] = []
    release = asyncio.Event()
    peak = 0

    async def user(number: int) -> None:
        nonlocal peak
        await gate.acquire()
        peak = max(peak, gate.in_use)
        order.append(number)
        await release.wait()
        gate.release()

    tasks = [asyncio.create_task(user(n)) for n in range(6)]
    await settle()
    assert order == [0, 1]
    release.set()
    await asyncio.gather(*tasks)
    assert order == list(range(6))
    assert peak == 2
    assert gate.in_use == 0


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    gate = Gate(1)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await settle()
    gate.release()  # granted to `first`...
    first.cancel()  # ...which is cancelled before it runs: the slot must go to `second`
    await settle()
    assert first.cancelled()
    assert second.done()
    assert gate.in_use == 1
    gate.release()
    assert gate.in_use == 0


async def test_a_waiter_cancelled_while_queued_leaves_the_queue() -> None:
    gate = Gate(1)
    await gate.acquire()
    waiting = asyncio.create_task(gate.acquire())
    await settle()
    waiting.cancel()
    await settle()
    gate.release()
    assert gate.in_use == 0
    await asyncio.wait_for(gate.acquire(), 1)  # nobody is in the way


async def test_slots_are_capped_per_host_and_in_all() -> None:
    budget = ConnectionBudget(total=3, per_host=2)
    inside: dict[str, int] = {"a:1": 0, "b:1": 0}
    peaks = {"a:1": 0, "b:1": 0, "all": 0}
    release = asyncio.Event()

    async def request(host: str) -> None:
        async with budget.slot(host):
            inside[host] += 1
            peaks[host] = max(peaks[host], inside[host])
            peaks["all"] = max(peaks["all"], sum(inside.values()))
            await release.wait()
            inside[host] -= 1

    tasks = [asyncio.create_task(request(h)) for h in ["a:1"] * 5 + ["b:1"] * 5]
    await settle()
    assert inside == {"a:1": 2, "b:1": 1}
    release.set()
    await asyncio.gather(*tasks)
    assert peaks["a:1"] == 2
    assert peaks["all"] == 3
    assert budget.peak("a:1") == 2


async def test_pause_holds_back_that_host_only() -> None:
    clock, sleeps = Clock(), Sleeps()
    budget = ConnectionBudget(total=8, per_host=4, sleep=sleeps, clock=clock)
    budget.pause("a:1", 12.0)
    clock.now += 2.0
    async with budget.slot("b:1"):
        pass
    assert sleeps.waits == []
    async with budget.slot("a:1"):
        pass
    assert sleeps.waits == [10.0]
    clock.now += 10.0
    async with budget.slot("a:1"):
        pass
    assert sleeps.waits == [10.0]  # the pause is over


async def test_a_longer_pause_during_the_wait_is_waited_out_too() -> None:
    clock = Clock()
    budget = ConnectionBudget(total=8, per_host=4, clock=clock)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            budget.pause("a:1", 30.0)  # the host complains again meanwhile
        clock.now += seconds

    budget.sleep = sleep
    budget.pause("a:1", 5.0)
    async with budget.slot("a:1"):
        pass
    assert waits == [5.0, 25.0]


async def test_a_complaint_halves_the_host_and_calm_answers_restore_it() -> None:
    budget = ConnectionBudget(total=16, per_host=8, sleep=Sleeps())
    budget.pause("a:1", None)
    assert budget.limit("a:1") == 4
    budget.pause("a:1", 0)
    assert budget.limit("a:1") == 2
    assert budget.limit("b:1") == 8
    for _ in range(2):
        budget.answered("a:1")
    assert budget.limit("a:1") == 3
    for _ in range(3 + 4 + 5 + 6 + 7):
        budget.answered("a:1")
    assert budget.limit("a:1") == 8
    budget.answered("a:1")
    assert budget.limit("a:1") == 8  # never above the cap


async def test_a_halved_host_admits_fewer_requests() -> None:
    budget = ConnectionBudget(total=16, per_host=4, sleep=Sleeps())
    release = asyncio.Event()
    inside = 0

    async def request() -> None:
        nonlocal inside
        async with budget.slot("a:1"):
            inside += 1
            await release.wait()

    budget.pause("a:1", 0)
    tasks = [asyncio.create_task(request()) for _ in range(4)]
    await settle()
    assert inside == 2
    release.set()
    await asyncio.gather(*tasks)
    assert inside == 4


def test_caps_must_be_positive() -> None:
    with pytest.raises(InvalidRequest):
        ConnectionBudget(total=0, per_host=1)
    with pytest.raises(InvalidRequest):
        ConnectionBudget(total=1, per_host=0)
