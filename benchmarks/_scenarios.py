"""What is measured: the files, the nginx servers, and the scenarios that combine them.

Add a server to :data:`SERVERS`, a file to :data:`FILES`, or a scenario to :data:`SCENARIOS`;
nothing else needs to change. Scenarios run in the order listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks._data import GIB, DataFile
from benchmarks._nginx import ServerSpec

CAP_RATE = 10_000_000  # bytes/s per connection: 16 connections make 160 MB/s
CONNECTIONS = 16

SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec("unthrottled"),
    ServerSpec("capped-10MB", rate=CAP_RATE),
)

FILES: tuple[DataFile, ...] = (
    DataFile("1g.bin", 1 * GIB),
    DataFile("4g.bin", 4 * GIB),
)


@dataclass(frozen=True)
class Scenario:
    """One table of results: every tool downloads ``file`` from ``server``.

    Attributes:
        name: what ``--only`` selects.
        server: a :class:`ServerSpec` name.
        file: a :class:`DataFile` name.
        tools: tool names (see ``benchmarks._tools.TOOLS``), in the order they run.
        description: one line printed above the table.
        default: part of a run without ``--only``.
        timeout_s: a run that takes longer is killed and counted as failed.
    """

    name: str
    server: str
    file: str
    tools: tuple[str, ...]
    description: str
    default: bool = True
    connections: int = CONNECTIONS
    timeout_s: float = 300.0


VERIFIED = ("asyncfetch", "torch.hub hash_prefix", "aria2c --checksum", "hashonly")
UNVERIFIED = ("asyncfetch --no-hash", "torch.hub", "aria2c", "hf_transfer", "curl")
CAPPED = ("asyncfetch", "asyncfetch --no-hash", "aria2c --checksum", "hf_transfer",
          "hf_transfer x100")  # fmt: skip

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("verified-1g", "unthrottled", "1g.bin", VERIFIED,
             "unthrottled loopback, 1 GiB, SHA-256 verified"),
    Scenario("unverified-1g", "unthrottled", "1g.bin", UNVERIFIED,
             "unthrottled loopback, 1 GiB, no verification"),
    Scenario("unverified-4g", "unthrottled", "4g.bin", UNVERIFIED,
             "unthrottled loopback, 4 GiB, no verification"),
    Scenario("capped-1g", "capped-10MB", "1g.bin", CAPPED,
             f"nginx limit_rate {CAP_RATE / 1e6:g} MB/s per connection, 1 GiB"),
)  # fmt: skip


def select(only: str | None) -> list[Scenario]:
    """Return the default scenarios, or those named in a comma-separated ``only``."""
    if not only:
        return [s for s in SCENARIOS if s.default]
    by_name = {s.name: s for s in SCENARIOS}
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; choose from {sorted(by_name)}")
    return [by_name[name] for name in names]
