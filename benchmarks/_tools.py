"""The downloaders under test: each tool is a name, an argv builder and how to check its work.

To add a tool, write a function ``Job -> argv`` and add a :class:`Tool` to :data:`TOOLS`.
Python tools run as ``python -c SNIPPET ARGS`` children of the venv interpreter, so their
wall time includes interpreter start-up and imports, as a user would see it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HASHONLY_BLOCK = 4 << 20
HF_CHUNK_SIZE = 10 * 1024 * 1024  # huggingface_hub's DOWNLOAD_CHUNK_SIZE for hf_transfer
HF_HUB_MAX_FILES = 100  # huggingface_hub's HF_TRANSFER_CONCURRENCY
PROBE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Job:
    """One download for a tool to do (``source`` is the served file, for ``hashonly``)."""

    python: str
    url: str
    dest: Path
    source: Path
    size: int
    sha256: str
    connections: int


@dataclass(frozen=True)
class Tool:
    """A tool under test.

    Attributes:
        name: the row label; also what scenarios list.
        argv: builds the command line for a job.
        verifies: the tool checks SHA-256 itself (then the harness re-hashes its output).
        probe: a command that exits 0 when the tool is usable ({python} is replaced).
        writes_file: False for ``hashonly``, which prints a digest instead of writing a file.
        is_asyncfetch: a row of the library under test (peers are compared with these rows).
    """

    name: str
    argv: Callable[[Job], list[str]]
    verifies: bool
    probe: tuple[str, ...]
    writes_file: bool = True
    is_asyncfetch: bool = False


TORCH_HUB_SNIPPET = """\
import sys
from torch.hub import download_url_to_file
download_url_to_file(sys.argv[1], sys.argv[2], hash_prefix=sys.argv[3] or None, progress=False)
"""

HF_TRANSFER_SNIPPET = """\
import sys
import hf_transfer
hf_transfer.download(
    url=sys.argv[1], filename=sys.argv[2], max_files=int(sys.argv[3]), chunk_size=int(sys.argv[4])
)
"""

HASHONLY_SNIPPET = """\
import hashlib, sys
digest = hashlib.sha256()
buf = bytearray(int(sys.argv[2]))
view = memoryview(buf)
with open(sys.argv[1], "rb", buffering=0) as f:
    while n := f.readinto(buf):
        digest.update(view[:n])
print(digest.hexdigest())
"""


def asyncfetch_argv(job: Job, *, verify: bool) -> list[str]:
    """``python -m asyncfetch get``, with ``--sha256`` or ``--no-hash``."""
    check = ["--sha256", job.sha256] if verify else ["--no-hash"]
    return [
        job.python, "-m", "asyncfetch", "get", job.url, "-o", str(job.dest),
        "--no-progress", "--connections", str(job.connections), *check,
    ]  # fmt: skip


def torch_hub_argv(job: Job, *, verify: bool) -> list[str]:
    """``torch.hub.download_url_to_file``; verified means ``hash_prefix`` = 8 hex digits."""
    prefix = job.sha256[:8] if verify else ""
    return [job.python, "-c", TORCH_HUB_SNIPPET, job.url, str(job.dest), prefix]


def aria2c_argv(job: Job, *, verify: bool) -> list[str]:
    """``aria2c -x16 -s16 -k1M``; verified adds ``--checksum=sha-256=HEX``."""
    n = str(job.connections)
    check = [f"--checksum=sha-256={job.sha256}"] if verify else []
    return [
        "aria2c", "--no-conf", f"--max-connection-per-server={n}", f"--split={n}",
        "--min-split-size=1M", "--file-allocation=none", "--allow-overwrite=true",
        "--console-log-level=warn", "--summary-interval=0", "--download-result=hide",
        *check, "-d", str(job.dest.parent), "-o", job.dest.name, job.url,
    ]  # fmt: skip


def hf_transfer_argv(job: Job, *, max_files: int | None = None) -> list[str]:
    """``hf_transfer.download`` with 10 MiB chunks; ``max_files`` parallel requests."""
    files = str(max_files or job.connections)
    return [job.python, "-c", HF_TRANSFER_SNIPPET, job.url, str(job.dest), files,
            str(HF_CHUNK_SIZE)]  # fmt: skip


def curl_argv(job: Job) -> list[str]:
    """``curl -s -o PATH URL`` (plus ``--fail``, so that an HTTP error is a failed run)."""
    return ["curl", "-s", "--fail", "-o", str(job.dest), job.url]


def hashonly_argv(job: Job) -> list[str]:
    """SHA-256 of the page-cached source file: the ceiling for any verified download."""
    return [job.python, "-c", HASHONLY_SNIPPET, str(job.source), str(HASHONLY_BLOCK)]


PY = "{python}"

TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool("asyncfetch", lambda j: asyncfetch_argv(j, verify=True), True,
             (PY, "-m", "asyncfetch", "get", "--help"), is_asyncfetch=True),
        Tool("asyncfetch --no-hash", lambda j: asyncfetch_argv(j, verify=False), False,
             (PY, "-m", "asyncfetch", "get", "--help"), is_asyncfetch=True),
        Tool("torch.hub hash_prefix", lambda j: torch_hub_argv(j, verify=True), True,
             (PY, "-c", "import torch.hub")),
        Tool("torch.hub", lambda j: torch_hub_argv(j, verify=False), False,
             (PY, "-c", "import torch.hub")),
        Tool("aria2c --checksum", lambda j: aria2c_argv(j, verify=True), True,
             ("aria2c", "--version")),
        Tool("aria2c", lambda j: aria2c_argv(j, verify=False), False, ("aria2c", "--version")),
        Tool("hf_transfer", hf_transfer_argv, False, (PY, "-c", "import hf_transfer")),
        Tool("hf_transfer x100", lambda j: hf_transfer_argv(j, max_files=HF_HUB_MAX_FILES),
             False, (PY, "-c", "import hf_transfer")),
        Tool("curl", curl_argv, False, ("curl", "--version")),
        Tool("hashonly", hashonly_argv, True, (PY, "-c", "import hashlib"), writes_file=False),
    )
}  # fmt: skip


def unavailable(tool: Tool, python: str) -> str | None:
    """Return why ``tool`` cannot run here, or None when its probe command succeeds."""
    return _probe(tuple(python if part == PY else part for part in tool.probe))


@cache
def _probe(argv: tuple[str, ...]) -> str | None:
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} not found (run benchmarks/setup.sh)"
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(argv[:3])}: {exc}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"`{' '.join(argv)}` failed: {lines[-1] if lines else done.returncode}"
    return None
