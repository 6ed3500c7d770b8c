"""Retries are visible: each wait is a ``retry`` event and a logged warning saying what
failed, attempt k of n and the wait; a permanent failure is not retried at all."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import ProgressEvent
from tests.faultserver import FaultServer, make_payload
from tests.helpers import no_wait


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/model.bin"


async def test_each_wait_is_an_event_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = _refused_url()
    policy, sleeps = no_wait(attempts=3)
    events: list[ProgressEvent] = []

    with pytest.raises(asyncfetch.ConnectionFailed):
        await asyncfetch.fetch(url, tmp_path / "m.bin", retry=policy, progress=events.append)

    retries = [e for e in events if e.kind == "retry"]
    assert [(e.attempt, e.of) for e in retries] == [(1, 3), (2, 3)]
    assert [e.wait for e in retries] == sleeps.waits
    assert all(e.error.startswith(f"{url}: connection failed") for e in retries)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{url}: connection failed")
    assert f"attempt 1 of 3, waiting {sleeps.waits[0]:.1f} s" in warnings[0]


async def test_a_range_cut_midway_waits_visibly_and_finishes(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(300_000, seed=2)
    server.add_file("m.bin", data)
    policy, sleeps = no_wait()
    events: list[ProgressEvent] = []

    await asyncfetch.fetch(
        server.url("m.bin", reset_after=100_000, times=1), tmp_path / "m.bin", connections=1,
        retry=policy, progress=events.append,
    )  # fmt: skip

    (retry,) = [e for e in events if e.kind == "retry"]
    assert (retry.attempt, retry.of, retry.wait) == (1, 5, sleeps.waits[0])
    assert "m.bin" in retry.error
    assert (tmp_path / "m.bin").read_bytes() == data


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_permanent_failure_is_not_retried(
    server: FaultServer, tmp_path: Path, status: int
) -> None:
    server.add_file("m.bin", b"x" * 1000)
    policy, sleeps = no_wait()
    events: list[ProgressEvent] = []

    with pytest.raises(asyncfetch.HTTPStatusError):
        await asyncfetch.fetch(
            server.url("m.bin", status=status), tmp_path / "m.bin", retry=policy,
            progress=events.append,
        )  # fmt: skip

    assert sleeps.waits == []
    assert [e.kind for e in events] == ["started", "failed"]
    assert len(server.gets("m.bin")) <= 2  # the probe (a 403 is asked again without x-amz-*)
