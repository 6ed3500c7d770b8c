"""The mirror scoreboard: benching, choice and moving connections to faster sources."""

from __future__ import annotations

from asyncfetch._engine.mirrors import MirrorBoard


def board_with_speeds(**speeds: float) -> MirrorBoard:
    board = MirrorBoard.of(list(speeds))
    for url, speed in speeds.items():
        board.record_bytes(url, int(speed * 10), 10.0)
    return board


def test_connections_start_spread_round_robin() -> None:
    board = MirrorBoard.of(["a", "b"])
    homes = [board.home_for(n) for n in range(4)]
    assert homes == ["a", "b", "a", "b"]
    assert [s.workers for s in board.sources] == [2, 2]


def test_a_connection_moves_to_a_much_faster_source() -> None:
    board = board_with_speeds(slow=1e6, fast=4e6)
    for n in range(4):
        board.home_for(n)
    assert board.rehome("slow", now=0) == "fast"
    assert board.rehome("slow", now=0) == "slow"  # the last one stays, to keep measuring
    assert [s.workers for s in board.sources] == [1, 3]


def test_similar_speeds_do_not_shuffle_connections() -> None:
    board = board_with_speeds(a=1e6, b=1.4e6)
    for n in range(4):
        board.home_for(n)
    assert board.rehome("a", now=0) == "a"


def test_a_dropped_home_is_left() -> None:
    board = board_with_speeds(a=1e6, b=1e6)
    board.home_for(0)
    board.home_for(1)
    board.drop("a", "serves another file")
    assert board.rehome("a", now=0) == "b"


def test_a_benched_source_is_not_picked_until_it_is_back() -> None:
    board = board_with_speeds(a=1e6, b=2e6)
    pause = board.record_failure("a", "HTTP 429", now=100.0, retry_after=30)
    assert pause == 30
    assert board.pick("a", now=110.0) == "b"
    assert board.pick("a", now=131.0) == "a"


def test_backoff_grows_and_every_failure_is_listed() -> None:
    board = MirrorBoard.of(["a", "b"])
    first = board.record_failure("a", "reset", now=0.0)
    second = board.record_failure("a", "reset again", now=0.0)
    assert second == 2 * first
    board.record_failure("b", "HTTP 503", now=0.0)
    assert board.failures() == {"a": "reset again", "b": "HTTP 503"}
