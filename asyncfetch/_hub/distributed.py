"""One download per node under torchrun / ``torch.distributed``, with no collective calls.

Every process that wants a checkpoint calls :func:`once_per_node` with the same target path.
The file is missing → one process (local rank 0 when it shows up) downloads it while holding a
file lock beside the target; the others poll until the file is there, then load it too. Nothing
here is a collective, so a long download cannot trip a process group's timeout, and no
rank-0-only code is needed in user scripts.

- A node-local cache: the lock is node-local, so exactly one process per node downloads.
- A shared filesystem: where locks work across nodes one process downloads for all of them;
  where they silently do nothing several may download, each into its own part file, and the
  atomic rename keeps the result correct.
- Local rank 0 goes first: the others do not take the lock for ``grace`` seconds. If rank 0
  never asks (or dies: the kernel frees its lock), another process takes over after that.
- If local rank 0's download fails it leaves a note, and the waiting processes raise at once
  instead of trying again one after another: the same asyncfetch error class (HTTPStatusError,
  OfflineError, ...) with its attributes (``status``, ``url``, ``retryable``, ...), rebuilt by
  name from JSON (a note in a shared directory is never unpickled); any other error, a
  FetchError.

Outside a distributed job nothing is locked here: the caller serializes its threads, and
processes rely on the engine (per-process part files, atomic rename; the cache's lock).

torch-free: the role comes from torchrun's environment, or from the caller (the hub facade
adds what an initialized process group knows).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from filelock import FileLock, Timeout

from .._config import env_settings
from .._errors import error_from_note, error_note
from .._storage.nofollow import create_new, read_small

log = logging.getLogger("asyncfetch")

T = TypeVar("T")

DEFAULT_GRACE = 30.0
POLL_FIRST = 0.05
POLL_MAX = 1.0
LOCK_SUFFIX = ".hub.lock"
FAILED_SUFFIX = ".hub-failed.json"


@dataclass(frozen=True)
class NodeRole:
    """Where this process stands in a distributed job.

    Attributes:
        rank: the global rank (0 outside a job).
        local_rank: the rank on this node, when known.
        world_size: processes in the job (1 outside a job).
    """

    rank: int = 0
    local_rank: int | None = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        """Whether other processes of the same job may want the same file."""
        return self.world_size > 1

    @property
    def leader(self) -> bool:
        """Whether this process downloads first: local rank 0 (global rank 0 if unknown)."""
        return self.local_rank == 0 if self.local_rank is not None else self.rank == 0


SINGLE = NodeRole()


def role_from_env() -> NodeRole:
    """The role torchrun's ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` describe."""
    env = env_settings()
    if not env.world_size or env.world_size <= 1:
        return SINGLE
    return NodeRole(rank=env.rank or 0, local_rank=env.local_rank, world_size=env.world_size)


def node_lock_path(target: Path) -> Path:
    """The lock file that decides who downloads ``target``."""
    return target.with_name(target.name + LOCK_SUFFIX)


def failure_path(target: Path) -> Path:
    """Where the leader notes that its download of ``target`` failed."""
    return target.with_name(target.name + FAILED_SUFFIX)


def once_per_node(
    target: Path,
    ensure: Callable[[], T],
    role: NodeRole = SINGLE,
    *,
    grace: float = DEFAULT_GRACE,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``ensure`` (which makes ``target`` exist) so that one process downloads it.

    ``ensure`` runs in every process: unlocked when the file is already there (a cache hit)
    or outside a distributed job, else under the lock, where it finds the file if another
    process made it meanwhile.

    Raises:
        FetchError: what ``ensure`` raised, or, waiting for the leader, its error (same class).
    """
    if target.exists() or not role.distributed:
        return ensure()
    lock = FileLock(node_lock_path(target))
    if role.leader:
        return _lead(target, lock, ensure)
    return _follow(target, lock, ensure, grace, sleep)


def _lead(target: Path, lock: FileLock, ensure: Callable[[], T]) -> T:
    with lock:
        try:
            result = ensure()
        except Exception as exc:
            _note_failure(target, exc)
            raise
    with contextlib.suppress(FileNotFoundError):
        failure_path(target).unlink()
    return result


def _follow(
    target: Path,
    lock: FileLock,
    ensure: Callable[[], T],
    grace: float,
    sleep: Callable[[float], None],
) -> T:
    started = time.monotonic()
    started_wall = time.time()
    delay = POLL_FIRST
    while True:
        if target.exists():
            return ensure()
        _raise_noted_failure(target, started_wall)
        with contextlib.suppress(Timeout), lock.acquire(blocking=False):
            if target.exists() or time.monotonic() - started >= grace:
                if not target.exists():
                    log.warning("%s: local rank 0 did not download it; downloading here", target)
                return ensure()
        sleep(delay)
        delay = min(delay * 2, POLL_MAX)


def _note_failure(target: Path, exc: Exception) -> None:
    note = {"pid": os.getpid(), **error_note(exc)}
    tmp = failure_path(target).with_suffix(f".{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        fd = create_new(tmp)  # a predictable name: never written through a link put there
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(json.dumps(note))
        os.replace(tmp, failure_path(target))


def _raise_noted_failure(target: Path, since: float) -> None:
    path = failure_path(target)
    try:
        if path.stat().st_mtime < since - 1.0:
            return  # left over from an earlier run
        note = json.loads(read_small(path)[0])
    except (OSError, ValueError):
        return
    if not isinstance(note, dict):
        return
    raise error_from_note(
        note,
        f"{target}: the download on local rank 0 (pid {note.get('pid')}) failed with "
        f"{note.get('error')}: {note.get('message')}; fix the cause and run the job again",
    )
