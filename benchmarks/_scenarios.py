"""What is measured: the files, the nginx servers, and the scenarios that combine them.

Add a server to :data:`SERVERS`, a file to :data:`FILES`, or a scenario to :data:`SCENARIOS`;
nothing else needs to change. Scenarios run in the order listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks._data import GIB, DataFile
from benchmarks._nginx import ServerSpec

CAP_RATE = 10_000_000  # bytes/s per connection: 16 connections make 160 MB/s
SLOW_MIRROR_RATE = 4_000_000  # the two mirrors of mirrors-1g, per connection
FAST_MIRROR_RATE = 12_000_000
CONNECTIONS = 16
WAN_RATE = 5_000_000  # wan-512m: per connection, behind a 40 ms round trip
WAN_HALF_RTT = 0.02
REQUEST_COST = 0.3  # mirrors-slowreq: seconds each range of the better mirror costs
BATCH_FILE_SIZE = 16_000_000
BATCH_FILES = 64

SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec("unthrottled"),
    ServerSpec("https", tls=True),
    ServerSpec("capped-10MB", rate=CAP_RATE),
    ServerSpec("mirror-4MB", rate=SLOW_MIRROR_RATE),
    ServerSpec("mirror-12MB", rate=FAST_MIRROR_RATE),
    ServerSpec("wan-5MB", rate=WAN_RATE, delay=WAN_HALF_RTT),
    ServerSpec("mirror-12MB-slowreq", rate=FAST_MIRROR_RATE, request_delay=REQUEST_COST),
)

FILES: tuple[DataFile, ...] = (
    DataFile("1g.bin", 1 * GIB),
    DataFile("2g.bin", 2 * GIB),
    DataFile("512m.bin", GIB // 2),
    DataFile("4g.bin", 4 * GIB),
    DataFile("batch-64x16m", BATCH_FILE_SIZE, count=BATCH_FILES),
    DataFile("ckpt-500m.pt", 500_000_000, kind="checkpoint"),
)


@dataclass(frozen=True)
class Scenario:
    """One table of results: every tool downloads ``file`` from ``server``.

    Attributes:
        name: what ``--only`` selects.
        server: a :class:`ServerSpec` name.
        file: a :class:`DataFile` name (all of its files, for a batch).
        tools: tool names (see ``benchmarks._tools.TOOLS``), in the order they run.
        description: one line printed above the table.
        default: part of a run without ``--only``.
        connections: the connection budget every tool is given.
        timeout_s: a run that takes longer is killed and counted as failed.
        mirrors: other servers that serve the same file (tools that take mirrors get them).
        reference: the asyncfetch row peers are compared with (default: by ``verifies``).
        count_served: read the servers' access logs: bytes and requests each run caused.
    """

    name: str
    server: str
    file: str
    tools: tuple[str, ...]
    description: str
    default: bool = True
    connections: int = CONNECTIONS
    timeout_s: float = 300.0
    mirrors: tuple[str, ...] = ()
    reference: str | None = None
    count_served: bool = False

    @property
    def servers(self) -> tuple[str, ...]:
        """Every server the scenario downloads from, its own first."""
        return (self.server, *self.mirrors)


VERIFIED = ("asyncfetch", "torch.hub hash_prefix", "aria2c --checksum", "hashonly")
UNVERIFIED = ("asyncfetch --no-hash", "torch.hub", "aria2c", "hf_transfer", "curl",
              "curl + fsync")  # fmt: skip
HTTPS_VERIFIED = ("asyncfetch", "hashonly", "curl + fsync",
                  "curl + tee + openssl sha256 + fsync", "torch.hub hash_prefix")  # fmt: skip
HTTPS_UNVERIFIED = ("asyncfetch --no-hash", "curl", "curl + fsync", "hf_transfer",
                    "hf_transfer + fsync", "torch.hub")  # fmt: skip
DURABLE_2G = ("asyncfetch --no-hash", "hf_transfer", "hf_transfer + fsync", "curl + fsync")
CAPPED = ("asyncfetch", "asyncfetch --no-hash", "aria2c --checksum", "hf_transfer",
          "hf_transfer x100")  # fmt: skip
MIRRORS = ("asyncfetch --mirror", "aria2c --checksum 2 URIs", "asyncfetch mirrors")
WAN = ("asyncfetch", "asyncfetch --no-hash", "aria2c", "hf_transfer", "curl")
SLOW_REQUESTS = ("asyncfetch --mirror", "curl")
BATCH = ("asyncfetch batch", "aria2c -i -j16 -x1 --checksum", "torch.hub hash_prefix loop")
CACHE_HIT = ("asyncfetch cache hit", "torch.load")

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("verified-1g", "unthrottled", "1g.bin", VERIFIED,
             "unthrottled loopback, 1 GiB, SHA-256 verified"),
    Scenario("unverified-1g", "unthrottled", "1g.bin", UNVERIFIED,
             "unthrottled loopback, 1 GiB, no verification"),
    Scenario("unverified-4g", "unthrottled", "4g.bin", UNVERIFIED,
             "unthrottled loopback, 4 GiB, no verification"),
    Scenario("https-verified-1g", "https", "1g.bin", HTTPS_VERIFIED,
             "https on loopback (generated CA, trusted via SSL_CERT_FILE), 1 GiB, SHA-256"),
    Scenario("https-unverified-1g", "https", "1g.bin", HTTPS_UNVERIFIED,
             "https on loopback (generated CA, trusted via SSL_CERT_FILE), 1 GiB, no hash"),
    Scenario("durable-2g", "unthrottled", "2g.bin", DURABLE_2G,
             "unthrottled loopback http, 2 GiB, no verification, durable vs durable"),
    Scenario("capped-1g", "capped-10MB", "1g.bin", CAPPED,
             f"nginx limit_rate {CAP_RATE / 1e6:g} MB/s per connection, 1 GiB"),
    Scenario("mirrors-1g", "mirror-4MB", "1g.bin", MIRRORS,
             f"two mirrors of 1 GiB, limit_rate {SLOW_MIRROR_RATE / 1e6:g} and "
             f"{FAST_MIRROR_RATE / 1e6:g} MB/s per connection, 16 connections in all",
             mirrors=("mirror-12MB",), reference="asyncfetch --mirror", count_served=True),
    Scenario("wan-512m", "wan-5MB", "512m.bin", WAN,
             f"40 ms round trip (a delaying proxy), nginx limit_rate {WAN_RATE / 1e6:g} MB/s "
             f"per connection, 512 MiB; target: asyncfetch >= 90% of 16 x the cap",
             timeout_s=400.0),
    Scenario("mirrors-slowreq", "mirror-12MB-slowreq", "512m.bin", SLOW_REQUESTS,
             f"two mirrors of 512 MiB, limit_rate {FAST_MIRROR_RATE / 1e6:g} MB/s per "
             f"connection with {REQUEST_COST:g} s per request, and "
             f"{SLOW_MIRROR_RATE / 1e6:g} MB/s; target: asyncfetch >= one curl stream from "
             "the first", mirrors=("mirror-4MB",), reference="asyncfetch --mirror",
             count_served=True, timeout_s=400.0),
    Scenario("resume-1g", "capped-10MB", "1g.bin", ("asyncfetch rerun after kill",),
             "1 GiB at 10 MB/s per connection, SIGKILLed once its journal shows 50%, rerun",
             count_served=True),
    Scenario("batch-64x16m", "capped-10MB", "batch-64x16m", BATCH,
             f"{BATCH_FILES} files of {BATCH_FILE_SIZE / 1e6:g} MB, limit_rate "
             f"{CAP_RATE / 1e6:g} MB/s per connection, 16 connections in all",
             reference="asyncfetch batch", count_served=True, timeout_s=600.0),
    Scenario("cache-hit", "unthrottled", "ckpt-500m.pt", CACHE_HIT,
             "a ~500 MB checkpoint already in the cache: load it in a fresh interpreter",
             reference="asyncfetch cache hit", count_served=True),
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
