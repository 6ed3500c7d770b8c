"""The cache-hit scenario: a checkpoint already in a cache dir, loaded again in a new process.

``populate`` (untimed, before each run) makes sure ``WORK/checkpoints`` holds the checkpoint,
downloaded and verified once by ``asyncfetch.load_state_dict_from_url`` itself, so that its
verified marker is asyncfetch's own. The timed rows then load that same file in a fresh
interpreter: through ``load_state_dict_from_url`` (a cache hit) and with plain ``torch.load``.
Both rows pay for starting Python and importing torch, as a user would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks._data import warm
from benchmarks._job import PY, Facts, Job, PrepareError, last_line

MODEL_DIR = "checkpoints"
POPULATE_TIMEOUT_S = 300.0
PROBE = (PY, "-c", "import asyncfetch; asyncfetch.load_state_dict_from_url")
LOADED = re.compile(r"loaded (\d+) tensors")
_filled: set[Path] = set()  # cache dirs filled by this process

ASYNCFETCH_SNIPPET = """\
import sys
import asyncfetch
state = asyncfetch.load_state_dict_from_url(
    sys.argv[1], model_dir=sys.argv[2], map_location="cpu", progress=False, weights_only=True,
    sha256=sys.argv[3],
)
print(f"loaded {len(state)} tensors")
"""

TORCH_LOAD_SNIPPET = """\
import sys
import torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
print(f"loaded {len(state)} tensors")
"""


def model_dir(job: Job) -> Path:
    """The cache dir the scenario loads from (kept across runs)."""
    return job.work_dir / MODEL_DIR


def cached_file(job: Job) -> Path:
    """Where ``load_state_dict_from_url`` keeps the checkpoint (torch.hub's naming)."""
    return model_dir(job) / Path(urlsplit(job.url).path).name


def asyncfetch_argv(job: Job) -> list[str]:
    """A fresh interpreter: ``asyncfetch.load_state_dict_from_url(url, model_dir, sha256)``."""
    return [job.python, "-c", ASYNCFETCH_SNIPPET, job.url, str(model_dir(job)), job.sha256]


def torch_load_argv(job: Job) -> list[str]:
    """A fresh interpreter: ``torch.load`` of the cached file."""
    return [job.python, "-c", TORCH_LOAD_SNIPPET, str(cached_file(job))]


def populate(job: Job) -> Facts:
    """Fill the cache afresh once per benchmark process; page-cache the file before each run.

    The first call empties the cache dir and lets ``load_state_dict_from_url`` download and
    verify the checkpoint, so the file and its marker are what this asyncfetch writes (not
    left over from an older version).

    Raises:
        PrepareError: ``load_state_dict_from_url`` failed or left no file of the right size.
    """
    path = cached_file(job)
    if path.parent not in _filled:
        shutil.rmtree(path.parent, ignore_errors=True)
        _filled.add(path.parent)
    if not _complete(path, job.size):
        argv = asyncfetch_argv(job)
        log_path = job.log_path.with_suffix(".populate.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as out:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(job.env), timeout=POPULATE_TIMEOUT_S, check=False,
            )  # fmt: skip
        if done.returncode != 0 or not _complete(path, job.size):
            raise PrepareError(f"filling the cache failed (exit {done.returncode}; {log_path})")
    warm(path)
    others = sorted(p.name for p in path.parent.iterdir() if p != path)
    return {"cache_dir_holds": others}


def check_loaded(job: Job, text: str) -> str | None:
    """The child must print ``loaded N tensors`` with N > 0."""
    line = last_line(text)
    match = LOADED.fullmatch(line)
    return None if match and int(match[1]) > 0 else f"printed {line[:120]!r}"


def _complete(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False
