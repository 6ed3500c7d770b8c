"""The targets asyncfetch is held to, checked against the measured medians.

Each target yields a :class:`Verdict`; one whose inputs were not measured (tool unavailable,
scenario not selected) is ``n/a`` rather than a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks._runner import ScenarioResult
from benchmarks._scenarios import CAP_RATE, CONNECTIONS

VERIFIED_ROW = "asyncfetch"
UNVERIFIED_ROW = "asyncfetch --no-hash"
HASH_CEILING_FACTOR = 1.05
CAP_SHARE = 0.90
CAP_MB_S = CAP_RATE * CONNECTIONS / 1e6
RSS_OVER_IDLE_MB = 100.0
RSS_SIZE_SPREAD_MB = 10.0

Results = dict[str, ScenarioResult]


@dataclass(frozen=True)
class Verdict:
    """One target: what was compared, and PASS (True), FAIL (False) or n/a (None)."""

    name: str
    detail: str
    passed: bool | None

    @property
    def mark(self) -> str:
        """PASS, FAIL or n/a."""
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


def _median(results: Results, scenario: str, tool: str, attr: str) -> float | None:
    result = results.get(scenario)
    row = result.get(tool) if result else None
    return row.median(attr) if row else None


def _faster_or_equal(scenario: str, ours: str, peer: str) -> Callable[[Results], Verdict]:
    def check(results: Results) -> Verdict:
        name = f"{scenario}: {ours} at least as fast as {peer}"
        a = _median(results, scenario, ours, "wall_s")
        b = _median(results, scenario, peer, "wall_s")
        if a is None or b is None:
            return Verdict(name, "not measured", None)
        return Verdict(name, f"{b:.2f} s / {a:.2f} s = {b / a:.2f}x (target >= 1.00x)", b >= a)

    return check


def _near_hash_ceiling(results: Results) -> Verdict:
    name = f"verified-1g: asyncfetch wall <= {HASH_CEILING_FACTOR:.2f} x hashonly"
    a = _median(results, "verified-1g", VERIFIED_ROW, "wall_s")
    h = _median(results, "verified-1g", "hashonly", "wall_s")
    if a is None or h is None:
        return Verdict(name, "not measured", None)
    detail = f"{a:.2f} s / {h:.2f} s = {a / h:.2f}x (target <= {HASH_CEILING_FACTOR:.2f}x)"
    return Verdict(name, detail, a <= HASH_CEILING_FACTOR * h)


def _near_cap(results: Results) -> Verdict:
    goal = CAP_SHARE * CAP_MB_S
    name = f"capped-1g: asyncfetch >= {CAP_SHARE:.0%} of {CAP_MB_S:.0f} MB/s"
    wall = _median(results, "capped-1g", VERIFIED_ROW, "wall_s")
    result = results.get("capped-1g")
    if wall is None or result is None:
        return Verdict(name, "not measured", None)
    speed = result.size / 1e6 / wall
    return Verdict(name, f"{speed:.0f} MB/s (target >= {goal:.0f} MB/s)", speed >= goal)


def _rss_over_idle(idle_mb: float | None) -> Callable[[Results], Verdict]:
    def check(results: Results) -> Verdict:
        name = f"peak RSS of asyncfetch <= idle interpreter + {RSS_OVER_IDLE_MB:.0f} MB"
        peaks = [
            (row.median("peak_rss_mb"), f"{res.scenario.name}/{row.tool}")
            for res in results.values() for row in res.tools if row.is_asyncfetch
        ]  # fmt: skip
        measured = [(rss, where) for rss, where in peaks if rss is not None]
        if idle_mb is None or not measured:
            return Verdict(name, "not measured", None)
        rss, where = max(measured)
        detail = f"max {rss:.0f} MB ({where}) vs idle {idle_mb:.0f} MB + {RSS_OVER_IDLE_MB:.0f}"
        return Verdict(name, detail, rss <= idle_mb + RSS_OVER_IDLE_MB)

    return check


def _rss_independent_of_size(results: Results) -> Verdict:
    """Same tool row, same server: the 1 GiB and the 4 GiB file peak within 10 MB."""
    name = f"asyncfetch peak RSS, 1 GiB vs 4 GiB, within {RSS_SIZE_SPREAD_MB:.0f} MB"
    pairs = []
    for small in results.values():
        for big in results.values():
            if small.size * 4 != big.size or small.scenario.server != big.scenario.server:
                continue
            for row in small.tools:
                other = big.get(row.tool)
                a = row.median("peak_rss_mb") if row.is_asyncfetch else None
                b = other.median("peak_rss_mb") if other else None
                if a is not None and b is not None:
                    pairs.append((abs(b - a), f"{row.tool}: {a:.0f} vs {b:.0f} MB"))
    if not pairs:
        return Verdict(name, "needs unverified-1g and unverified-4g", None)
    spread, detail = max(pairs)
    return Verdict(name, detail, spread <= RSS_SIZE_SPREAD_MB)


def evaluate(results: Results, idle_mb: float | None) -> list[Verdict]:
    """Check every target against ``results``."""
    checks: list[Callable[[Results], Verdict]] = [
        _near_hash_ceiling,
        _faster_or_equal("unverified-4g", UNVERIFIED_ROW, "hf_transfer"),
        _faster_or_equal("unverified-4g", UNVERIFIED_ROW, "curl"),
        _near_cap,
        _faster_or_equal("capped-1g", VERIFIED_ROW, "aria2c --checksum"),
        _faster_or_equal("capped-1g", VERIFIED_ROW, "hf_transfer"),
        _rss_over_idle(idle_mb),
        _rss_independent_of_size,
    ]
    return [check(results) for check in checks]
