"""Small helpers shared by the tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from asyncfetch import RetryPolicy


class Sleeps:
    """A sleep for RetryPolicy that records the waits and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def no_wait(attempts: int = 5) -> tuple[RetryPolicy, Sleeps]:
    """A retry policy that never really waits, and the record of what it would have waited."""
    sleeps = Sleeps()
    return RetryPolicy(attempts=attempts, sleep=sleeps), sleeps


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def leftovers(directory: Path) -> list[str]:
    """Names of files in ``directory``, sorted."""
    return sorted(p.name for p in directory.iterdir())
