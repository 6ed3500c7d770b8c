"""The https verified-download targets of ``make bench``: the issue's version and the one for a
machine whose cores the transfer keeps busy (pure arithmetic on medians; no server)."""

from __future__ import annotations

from benchmarks._runner import Run, ScenarioResult, ToolResult
from benchmarks._scenarios import SCENARIOS
from benchmarks._targets import evaluate

SCENARIO = next(s for s in SCENARIOS if s.name == "https-verified-1g")


def _row(tool: str, wall_s: float, cpu_s: float) -> ToolResult:
    run = Run(wall_s=wall_s, cpu_s=cpu_s, peak_rss_mb=0, children_cpu_s=0, returncode=0, ok=True)
    return ToolResult(tool=tool, verifies=True, is_asyncfetch=tool == "asyncfetch", runs=[run])


def _https_verdicts(asyncfetch_s: float, cores: int) -> list[tuple[str, bool | None]]:
    result = ScenarioResult(SCENARIO, 1 << 30, "https://127.0.0.1/1g.bin", [
        _row("asyncfetch", asyncfetch_s, 2.2),
        _row("hashonly", 0.65, 0.60),
        _row("curl + fsync", 1.70, 1.20),
    ])  # fmt: skip
    verdicts = evaluate({SCENARIO.name: result}, idle_mb=None, cores=cores)
    ceilings = [v for v in verdicts if v.name.startswith(f"{SCENARIO.name}: asyncfetch wall")]
    return [(v.name, v.passed) for v in ceilings]


def test_the_busy_cores_ceiling_adds_the_hash_cpu_spread_over_the_cores() -> None:
    # ceilings: max(0.65, 1.70) = 1.70 s; on 2 cores 1.70 + 0.60 / 2 = 2.00 s
    (plain, plain_ok), (busy, busy_ok) = _https_verdicts(1.90, cores=2)
    assert "max(hashonly, curl + fsync)" in plain
    assert plain_ok is False  # 1.90 > 1.05 x 1.70
    assert "+ hashonly CPU / 2 cores" in busy
    assert busy_ok is True  # 1.90 <= 1.05 x 2.00


def test_on_many_cores_the_two_ceilings_agree() -> None:
    # 16 cores: 1.70 + 0.60 / 16 = 1.74 s; 1.90 s misses both
    assert [ok for _, ok in _https_verdicts(1.90, cores=16)] == [False, False]
    assert [ok for _, ok in _https_verdicts(1.75, cores=16)] == [True, True]
