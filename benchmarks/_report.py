"""Turn results into text tables (stdout), a markdown table (README) and ``results.json``.

"vs asyncfetch" is ``peer wall / asyncfetch wall``: above 1 means asyncfetch is faster. A
verified peer is compared with the verified asyncfetch row, an unverified peer with the
``--no-hash`` row, unless the scenario names its own reference row. What the runs recorded
besides time (bytes each server sent, asyncfetch's ``bytes_by_mirror``, a ranking) is
summarised in the notes under each table.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    if tool.max_runs is not None and tool.runs and not tool.skipped:
        notes.insert(0, f"runs at most {tool.max_runs}x (slow baseline)")
    facts = facts_note(result, tool)
    return Row(
        tool=tool.tool,
        ok="skip" if tool.skipped else ok,
        wall_s=wall,
        mb_s=result.size / 1e6 / wall if wall and tool.rate else None,
        cpu_s_per_gb=cpu / (result.size / 1e9) if cpu is not None else None,
        peak_rss_mb=tool.median("peak_rss_mb"),
        vs_asyncfetch=_ratio(result, tool, wall),
        note=tool.skipped or "; ".join([*notes, *([facts] if facts else [])]),
    )


def _ratio(result: ScenarioResult, tool: ToolResult, wall: float | None) -> float | None:
    if wall is None or tool.is_asyncfetch:
        return None
    if result.reference is not None:
        ours = result.get(result.reference)
    else:
        ours = result.get(VERIFIED_ROW if tool.verifies else UNVERIFIED_ROW)
    ours_wall = ours.median("wall_s") if ours else None
    return wall / ours_wall if ours_wall else None


def facts_note(result: ScenarioResult, tool: ToolResult) -> str:
    """What the runs recorded besides time, as medians over the successful runs."""
    parts = []
    servers = {urlsplit(url).port: name for name, url in result.urls.items()}
    served: list[dict[str, int]] = tool.fact("served")
    if served:
        requests: list[dict[str, int]] = tool.fact("requests")
        parts.append("nginx sent " + _per_server(served, result.size)
                     + f" in {_med([sum(r.values()) for r in requests]):.0f} requests")  # fmt: skip
    by_mirror: list[dict[str, int]] = tool.fact("bytes_by_mirror")
    if by_mirror and len(result.urls) > 1:
        named = [{servers.get(urlsplit(url).port, url): n for url, n in run.items()}
                 for run in by_mirror]  # fmt: skip
        parts.append("--json bytes_by_mirror " + _per_server(named, result.size))
    if killed := tool.fact("killed_at"):
        resumed = _med(tool.fact("resumed_bytes")) / result.size
        parts.append(f"killed at {_med(killed):.0%} journaled; --json resumed_bytes {resumed:.0%}")
    if holds := tool.fact("cache_dir_holds"):
        parts.append("beside the checkpoint: " + (", ".join(holds[-1]) or "nothing (no marker)"))
    if rankings := tool.fact("ranking"):
        firsts = [servers.get(urlsplit(r[0]).port, r[0]) if r else "-" for r in rankings]
        parts.append("ranked first: " + ", ".join(firsts))
    return "; ".join(parts)


def _per_server(runs: list[dict[str, int]], size: int) -> str:
    names = sorted({name for run in runs for name in run})
    return ", ".join(
        f"{name} {_med([run.get(name, 0) for run in runs]) / size:.0%}" for name in names
    )


def _med(values: list[Any]) -> float:
    return float(statistics.median(values)) if values else float("nan")


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
    gib = result.size / (1 << 30)
    size = f"{gib:g} GiB" if gib == round(gib) else f"{result.size / 1e6:,.0f} MB"
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
        most = max((len(tool.runs) for tool in result.tools), default=0)
        for tool, row in zip(result.tools, rows(result), strict=True):
            if row.wall_s is None:
                continue
            cells = list(_cells(row))
            if len(tool.runs) < most:  # e.g. a slow baseline that runs once
                cells[0] += f" ({len(tool.runs)} run{'s' if len(tool.runs) > 1 else ''} only)"
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
