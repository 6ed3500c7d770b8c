"""Tools of the many-files scenario: each gets the job's files as its own kind of list.

- ``asyncfetch batch MANIFEST``: JSON lines ``{"url", "dest", "sha256"}``, 16 connections in all.
- ``aria2c -i INPUT -j16 -x1``: 16 files at once, one connection each (a 16 MB file is below
  aria2c's 20 MiB ``--min-split-size``, so it would not split one anyway), ``checksum=`` each.
- ``torch.hub.download_url_to_file`` for each file in turn, in one Python child: the baseline
  a user of torch.hub gets (one connection), with ``hash_prefix``.

The lists are written into the scenario's work dir by the argv builders.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks._job import Job

MANIFEST = "manifest.jsonl"
ARIA2C_INPUT = "aria2c-input.txt"
HASH_PREFIX = 8

TORCH_HUB_LOOP_SNIPPET = """\
import json, sys
from torch.hub import download_url_to_file
with open(sys.argv[1]) as manifest:
    for line in manifest:
        item = json.loads(line)
        download_url_to_file(item["url"], item["dest"], hash_prefix=item["sha256"][:8],
                             progress=False)
"""


def write_manifest(job: Job) -> Path:
    """The job's files as JSON lines (url, dest, sha256), for asyncfetch and the torch loop."""
    path = job.work_dir / MANIFEST
    lines = [
        json.dumps({"url": item.url, "dest": str(item.dest), "sha256": item.sha256})
        for item in job.items
    ]
    _write(path, "\n".join(lines) + "\n")
    return path


def asyncfetch_batch_argv(job: Job) -> list[str]:
    """``python -m asyncfetch batch MANIFEST --connections N --json`` (writes the manifest)."""
    manifest = write_manifest(job)
    return [job.python, "-m", "asyncfetch", "batch", str(manifest),
            "--connections", str(job.connections), "--json", "--no-progress"]  # fmt: skip


def aria2c_input_argv(job: Job) -> list[str]:
    """``aria2c -i INPUT -j N -x1 -s1 -d DIR`` with ``out=`` and ``checksum=`` per file."""
    entries = [
        f"{item.url}\n  out={item.dest.name}\n  checksum=sha-256={item.sha256}\n"
        for item in job.items
    ]
    path = job.work_dir / ARIA2C_INPUT
    _write(path, "".join(entries))
    n = str(job.connections)
    return [
        "aria2c", "--no-conf", "-i", str(path), f"--max-concurrent-downloads={n}",
        "--max-connection-per-server=1", "--split=1", "--file-allocation=none",
        "--allow-overwrite=true", "--console-log-level=warn", "--summary-interval=0",
        "--download-result=hide", "-d", str(job.dest.parent),
    ]  # fmt: skip


def torch_hub_loop_argv(job: Job) -> list[str]:
    """One Python child calling ``download_url_to_file`` for each file, one after another."""
    return [job.python, "-c", TORCH_HUB_LOOP_SNIPPET, str(write_manifest(job))]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
