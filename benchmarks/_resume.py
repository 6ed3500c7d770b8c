"""The resume scenario's setup: start a download, SIGKILL it once half the file is on disk.

asyncfetch records what its ``.part`` file holds in a journal beside it
(``<dest>.<hex>.part.json``: JSON whose ``runs`` lists the ``[start, end)`` byte ranges
written and synced). The hook polls that journal and kills the download's process group when
the ranges add up to ``fraction`` of the file, so the measured run is the rerun that resumes.
"""

from __future__ import annotations

import glob
import json
import subprocess
import time
from pathlib import Path

from benchmarks._job import Facts, Job, PrepareError
from benchmarks._measure import kill_group

KILL_AT = 0.5
POLL_S = 0.05
TIMEOUT_S = 300.0


def journaled_bytes(dest: Path) -> int:
    """Bytes the resume journals of ``dest`` say are written (0 while there is none)."""
    total = 0
    for path in glob.glob(glob.escape(str(dest)) + ".*.part.json"):
        try:
            runs = json.loads(Path(path).read_text())["runs"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced, or not a journal: ask again at the next poll
        total += sum(end - start for start, end in runs)
    return total


def kill_halfway(argv: list[str], job: Job, fraction: float = KILL_AT) -> Facts:
    """Run ``argv`` until its journal covers ``fraction`` of ``job``, then SIGKILL it.

    Returns:
        ``killed_at``: the journaled fraction at the kill; ``killed_after_s``: when.

    Raises:
        PrepareError: the download ended (or stalled past the timeout) before the kill.
    """
    goal = fraction * job.size
    log_path = job.log_path.with_suffix(".killed.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=dict(job.env), start_new_session=True,
        )  # fmt: skip
    try:
        done = _wait_for(goal, job.dest, proc, start + TIMEOUT_S)
    finally:
        kill_group(proc.pid)
        proc.wait()
    return {"killed_at": done / job.size, "killed_after_s": time.monotonic() - start}


def _wait_for(goal: float, dest: Path, proc: subprocess.Popen[bytes], deadline: float) -> int:
    while True:
        done = journaled_bytes(dest)
        if done >= goal:
            return done
        if proc.poll() is not None:
            raise PrepareError(f"the download exited ({proc.returncode}) before it was killed")
        if time.monotonic() > deadline:
            raise PrepareError(f"the journal showed {done} bytes after {TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
