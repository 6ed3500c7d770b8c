"""Turn results into text tables (stdout), a markdown table (README) and ``results.json``.

"vs asyncfetch" is ``peer wall / asyncfetch wall``: above 1 means asyncfetch is faster. A
verified peer is compared with the verified asyncfetch row, an unverified peer with the
``--no-hash`` row.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks._runner import ScenarioResult, ToolResult
from benchmarks._targets import UNVERIFIED_ROW, VERIFIED_ROW, Verdict

DASH = "-"


@dataclass(frozen=True)
class Row:
    """The medians of one tool in one scenario, ready to print."""

    tool: str
    ok: str
    wall_s: float | None
    mb_s: float | None
    cpu_s_per_gb: float | None
    peak_rss_mb: float | None
    vs_asyncfetch: float | None
    note: str


def rows(result: ScenarioResult) -> list[Row]:
    """Return one :class:`Row` per tool of a scenario."""
    return [_row(result, tool) for tool in result.tools]


def _row(result: ScenarioResult, tool: ToolResult) -> Row:
    wall, cpu = tool.median("wall_s"), tool.median("cpu_s")
    ok = f"{sum(run.ok for run in tool.runs)}/{len(tool.runs)}"
    notes = sorted({run.note for run in tool.runs if run.note})
    return Row(
        tool=tool.tool,
        ok="skip" if tool.skipped else ok,
        wall_s=wall,
        mb_s=result.size / 1e6 / wall if wall else None,
        cpu_s_per_gb=cpu / (result.size / 1e9) if cpu is not None else None,
        peak_rss_mb=tool.median("peak_rss_mb"),
        vs_asyncfetch=_ratio(result, tool, wall),
        note=tool.skipped or "; ".join(notes),
    )


def _ratio(result: ScenarioResult, tool: ToolResult, wall: float | None) -> float | None:
    if tool.is_asyncfetch or wall is None:
        return None
    ours = result.get(VERIFIED_ROW if tool.verifies else UNVERIFIED_ROW)
    ours_wall = ours.median("wall_s") if ours else None
    return wall / ours_wall if ours_wall else None


def _fmt(value: float | None, spec: str) -> str:
    return DASH if value is None else format(value, spec)


HEADER = ("tool", "ok", "wall s", "MB/s", "CPU s/GB", "RSS MB", "vs asyncfetch")


def _cells(row: Row) -> tuple[str, ...]:
    ratio = DASH if row.vs_asyncfetch is None else f"{row.vs_asyncfetch:.2f}x"
    return (row.tool, row.ok, _fmt(row.wall_s, ".2f"), _fmt(row.mb_s, ".0f"),
            _fmt(row.cpu_s_per_gb, ".2f"), _fmt(row.peak_rss_mb, ".0f"), ratio)  # fmt: skip


def text_table(result: ScenarioResult) -> str:
    """A plain-text table for one scenario, with notes (skips, failures) below it."""
    body = [HEADER, *(_cells(row) for row in rows(result))]
    widths = [max(len(line[i]) for line in body) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
        for line in body
    ]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    size = f"{result.size / (1 << 30):g} GiB"
    title = f"== {result.scenario.name}: {result.scenario.description} [{size}]"
    notes = [f"   {row.tool}: {row.note}" for row in rows(result) if row.note]
    return "\n".join([title, *lines, *notes])


def targets_text(verdicts: list[Verdict]) -> str:
    """One line per target with its PASS/FAIL/n/a mark."""
    return "\n".join(["== targets", *(f"{v.mark:4}  {v.name}: {v.detail}" for v in verdicts)])


def markdown(results: list[ScenarioResult], command: str) -> str:
    """A markdown table of every scenario, for the README."""
    head = "| scenario | tool | wall s | MB/s | CPU s/GB | peak RSS MB | asyncfetch speed-up |"
    lines = [f"Measured with `{command}` (medians).", "", head, "|---|---|--:|--:|--:|--:|--:|"]
    for result in results:
        for row in rows(result):
            if row.wall_s is None:
                continue
            cells = _cells(row)
            lines.append(f"| {result.scenario.name} | {' | '.join(cells[:1] + cells[2:])} |")
    return "\n".join(lines)


def write_json(
    path: Path,
    results: list[ScenarioResult],
    verdicts: list[Verdict],
    meta: dict[str, object],
) -> None:
    """Write everything measured (every run, medians, targets, environment) to ``path``."""
    doc = {
        "meta": meta,
        "scenarios": [_scenario_json(result) for result in results],
        "targets": [{**asdict(v), "mark": v.mark} for v in verdicts],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def _scenario_json(result: ScenarioResult) -> dict[str, object]:
    by_tool = {row.tool: row for row in rows(result)}
    return {
        **asdict(result.scenario),
        "size": result.size,
        "url": result.url,
        "tools": [{**asdict(tool), "median": asdict(by_tool[tool.tool])} for tool in result.tools],
    }
