"""The vocabulary of a run: the files a tool must download (a :class:`Job`) and the tool.

A tool is an argv builder plus optional hooks: ``prepare`` (before each run, untimed: e.g.
start a download and kill it halfway), ``check_output`` (for tools that print a result instead
of writing files) and ``facts`` (numbers to keep from what the tool printed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Facts = dict[str, Any]
PY = "{python}"  # in a probe command: replaced by the interpreter under test


class PrepareError(RuntimeError):
    """A tool's ``prepare`` hook could not set the run up; the run counts as failed."""


@dataclass(frozen=True)
class Item:
    """One file to download: where it is served, where it goes, and what it must be.

    Attributes:
        url: the file on the scenario's server.
        dest: where the tool writes it.
        source: the served file (for ``hashonly`` and content checks).
        size: bytes.
        sha256: hex digest.
        mirrors: the same file on the scenario's other servers.
    """

    url: str
    dest: Path
    source: Path
    size: int
    sha256: str
    mirrors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """What one run of one tool has to do.

    Attributes:
        python: the interpreter for Python tools.
        items: the files (one, except in batch scenarios).
        connections: the connection budget of the scenario.
        work_dir: a dir kept across the runs of a scenario (manifests, caches).
        log_path: the measured run's output log (a ``prepare`` hook logs beside it).
        env: the environment for child processes.
    """

    python: str
    items: tuple[Item, ...]
    connections: int
    work_dir: Path
    log_path: Path
    env: Mapping[str, str]

    @property
    def url(self) -> str:
        """The URL of the first (usually only) file."""
        return self.items[0].url

    @property
    def dest(self) -> Path:
        """Where the first file goes."""
        return self.items[0].dest

    @property
    def source(self) -> Path:
        """The served copy of the first file."""
        return self.items[0].source

    @property
    def sha256(self) -> str:
        """The SHA-256 of the first file."""
        return self.items[0].sha256

    @property
    def mirrors(self) -> tuple[str, ...]:
        """Other URLs of the first file."""
        return self.items[0].mirrors

    @property
    def size(self) -> int:
        """Bytes to download in all."""
        return sum(item.size for item in self.items)


@dataclass(frozen=True)
class Tool:
    """A tool under test.

    Attributes:
        name: the row label; also what scenarios list.
        argv: builds the command line for a job.
        verifies: the tool checks SHA-256 itself (then the harness re-hashes its output).
        probe: a command that exits 0 when the tool is usable ({python} is replaced).
        writes_file: False for tools that print a result (``check_output`` judges it).
        is_asyncfetch: a row of the library under test (peers are compared with these rows).
        prepare: runs before each measured run, outside the timing; returns facts to keep.
        check_output: for tools that write no file: the output text → why it is wrong, or None.
        facts: the output text → numbers to keep with the run (e.g. ``bytes_by_mirror``).
        max_runs: run at most this many times per scenario (slow baselines).
        rate: MB/s is meaningful for this row (False for a ranking or a cache hit).
        imports_torch: the row loads torch, so the RSS target does not apply to it.
    """

    name: str
    argv: Callable[[Job], list[str]]
    verifies: bool
    probe: tuple[str, ...]
    writes_file: bool = True
    is_asyncfetch: bool = False
    prepare: Callable[[Job], Facts] | None = None
    check_output: Callable[[Job, str], str | None] | None = None
    facts: Callable[[str], Facts] | None = None
    max_runs: int | None = None
    rate: bool = True
    imports_torch: bool = False


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` that is a JSON object (other lines, e.g. warnings, are skipped)."""
    found = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def asyncfetch_facts(text: str) -> Facts:
    """From ``asyncfetch get|batch --json``: bytes per mirror and resumed bytes, summed."""
    by_mirror: dict[str, int] = {}
    resumed = files = 0
    for result in json_objects(text):
        if "size" not in result:
            continue
        files += 1
        resumed += int(result.get("resumed_bytes") or 0)
        for url, count in (result.get("bytes_by_mirror") or {}).items():
            by_mirror[url] = by_mirror.get(url, 0) + int(count)
    if not files:
        return {}
    return {"bytes_by_mirror": by_mirror, "resumed_bytes": resumed, "files": files}


def last_line(text: str) -> str:
    """The last non-blank line of ``text``."""
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else ""
