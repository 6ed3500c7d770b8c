"""``asyncfetch serve``'s job store: jobs and their state events in SQLite, in a local state
directory (not the cache dir, which may be on NFS, where SQLite's locking is unreliable).

One thread owns the one connection and runs every query in turn, so no SQLite call blocks the
event loop and no two writes race: :meth:`Store.call` hands it a function. The database is in
WAL mode with ``synchronous=NORMAL``: a commit survives the process being killed (kill -9),
though not the machine losing power before the OS writes it out.

One service per store: :func:`lock_state_dir` takes an exclusive ``flock`` on
``STATE_DIR/service.lock`` for as long as the service runs (the kernel lets go of it when the
process dies, however it dies); a second ``serve`` on the same state dir is refused, saying which
process holds it.

Without a state dir the store is in memory: jobs last as long as the process (tests, embedding).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from .._errors import DestinationError, InvalidRequest
from .._storage.nofollow import current_uid, is_own_file, is_trusted_owner
from .._storage.safepath import check_parents, make_private_dirs

T = TypeVar("T")

State = Literal["queued", "running", "done", "failed", "cancelled"]
STATES: tuple[State, ...] = ("queued", "running", "done", "failed", "cancelled")
ACTIVE: tuple[State, ...] = ("queued", "running")
DB_NAME = "jobs.sqlite3"
LOCK_NAME = "service.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL,
    url TEXT NOT NULL,
    mirrors TEXT NOT NULL,
    sha256 TEXT,
    name TEXT NOT NULL,
    replace INTEGER NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    runs INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_type TEXT,
    status INTEGER,
    result TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_active ON jobs(key)
    WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    kind TEXT NOT NULL,
    time REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_job ON events(job, id);
"""


@dataclass(frozen=True)
class NewJob:
    """What a job is asked to do: ``key`` says which submissions are the same job."""

    key: str
    url: str
    mirrors: tuple[str, ...]
    sha256: str | None
    name: str
    replace: bool


@dataclass(frozen=True)
class JobRow:
    """A job as the store holds it (``url`` and ``mirrors`` as given: they may hold secrets)."""

    id: str
    key: str
    url: str
    mirrors: tuple[str, ...]
    sha256: str | None
    name: str
    replace: bool
    state: State
    created: float
    updated: float
    runs: int
    error: str | None
    error_type: str | None
    status: int | None
    result: dict[str, Any] | None

    @property
    def active(self) -> bool:
        """Queued or running: not finished."""
        return self.state in ACTIVE


@dataclass(frozen=True)
class Event:
    """A state event of a job, as stored; ``id`` orders all events of the store."""

    id: int
    job: str
    kind: str
    time: float
    data: dict[str, Any]


_COLUMNS = (
    "id, key, url, mirrors, sha256, name, replace, state, created, updated, runs, error, "
    "error_type, status, result"
)


def _row(values: tuple[Any, ...]) -> JobRow:
    (id_, key, url, mirrors, sha256, name, replace, state, created, updated, runs, error,
     error_type, status, result) = values  # fmt: skip
    return JobRow(
        id_, key, url, tuple(json.loads(mirrors)), sha256, name, bool(replace), state, created,
        updated, runs, error, error_type, status, json.loads(result) if result else None,
    )  # fmt: skip


class Store:
    """Jobs and events in SQLite, every query on the store's one thread.

    Args:
        path: the database file, or None for one in memory.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="asyncfetch-store")
        self._db: sqlite3.Connection | None = None

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on the store's thread (where the connection lives)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    async def open(self) -> None:
        """Open (and create) the database."""
        await self.call(self._open)

    async def close(self) -> None:
        """Close the database and stop the store's thread."""
        await self.call(self._close)
        self._pool.shutdown(wait=True)

    def _open(self) -> None:
        if self.path is None:
            db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.close(fd)  # created private: it holds the URLs as given, credentials and all
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        assert db is not None, "the store is not open"
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- on the store's thread -----------------------------------------------------------

    def add(self, new: list[NewJob], room: int) -> list[tuple[JobRow, bool]]:
        """Each of ``new`` as a job: the queued or running one with its key, else a new queued
        one (and its ``queued`` event); all in one transaction. Returns (job, created) pairs.

        Raises:
            QueueFull-like InvalidRequest: more than ``room`` new jobs would be created (none is).
        """
        now = time.time()
        answers: list[tuple[JobRow, bool]] = []
        with self._transaction() as db:
            for job in new:
                found = db.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE key = ? AND state IN ('queued', 'running')",
                    (job.key,),
                ).fetchone()
                if found is not None:
                    answers.append((_row(found), False))
                    continue
                created = sum(made for _, made in answers)
                if created >= room:
                    raise NoRoom(room)
                id_ = uuid.uuid4().hex
                db.execute(
                    "INSERT INTO jobs (id, key, url, mirrors, sha256, name, replace, state, "
                    "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                    (id_, job.key, job.url, json.dumps(job.mirrors), job.sha256, job.name,
                     int(job.replace), now, now),
                )  # fmt: skip
                self._event(db, id_, "queued", now, {})
                row = self._get(db, id_)
                assert row is not None
                answers.append((row, True))
        return answers

    def get(self, id_: str) -> JobRow | None:
        """The job called ``id_``, or None."""
        assert self._db is not None
        return self._get(self._db, id_)

    @staticmethod
    def _get(db: sqlite3.Connection, id_: str) -> JobRow | None:
        found = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (id_,)).fetchone()
        return None if found is None else _row(found)

    def jobs(self, states: tuple[str, ...] = STATES, limit: int = 1000) -> list[JobRow]:
        """Jobs in ``states``, oldest first: the newest ``limit`` of them, so that a long
        history does not hide what was submitted last."""
        assert self._db is not None
        marks = ", ".join("?" * len(states))
        newest = f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq DESC LIMIT ?"
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM ({newest}) ORDER BY seq", (*states, limit)
        ).fetchall()
        return [_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        assert self._db is not None
        found = dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        return {state: found.get(state, 0) for state in STATES}

    def move(
        self,
        id_: str,
        state: State,
        *,
        kind: str | None = None,
        data: dict[str, Any] | None = None,
        only_from: tuple[State, ...] = ACTIVE,
        **fields: Any,
    ) -> JobRow | None:
        """Put job ``id_`` in ``state`` (with ``fields``: error, error_type, status, result)
        and record event ``kind`` (default: the state's name), if it is in ``only_from``;
        returns the job as it is now, or None when it is not (nothing changed)."""
        now = time.time()
        sets = {"state": state, "updated": now, **fields}
        if "result" in sets:
            sets["result"] = json.dumps(sets["result"])
        if state == "running":
            assigns = ", ".join(f"{k} = ?" for k in sets) + ", runs = runs + 1"
        else:
            assigns = ", ".join(f"{k} = ?" for k in sets)
        marks = ", ".join("?" * len(only_from))
        with self._transaction() as db:
            changed = db.execute(
                f"UPDATE jobs SET {assigns} WHERE id = ? AND state IN ({marks})",
                (*sets.values(), id_, *only_from),
            ).rowcount
            if not changed:
                return None
            self._event(db, id_, kind or state, now, data or {})
            return self._get(db, id_)

    def note(self, id_: str, kind: str, data: dict[str, Any]) -> None:
        """Record event ``kind`` of job ``id_`` (no change of state: a retry)."""
        with self._transaction() as db:
            self._event(db, id_, kind, time.time(), data)

    def requeue(self) -> list[JobRow]:
        """After a restart: put every running job back in the queue (its download died with
        the last service) and return the unfinished jobs, oldest first."""
        now = time.time()
        with self._transaction() as db:
            running = [r[0] for r in db.execute("SELECT id FROM jobs WHERE state = 'running'")]
            for id_ in running:
                db.execute("UPDATE jobs SET state = 'queued', updated = ? WHERE id = ?", (now, id_))
                self._event(db, id_, "queued", now, {"why": "the service restarted"})
        return self.jobs(ACTIVE, limit=1 << 31)

    def events(self, after: int = 0, job: str | None = None, limit: int = 1000) -> list[Event]:
        """Events after ``after`` (of ``job`` only, if given), in order."""
        assert self._db is not None
        if job is None:
            query, args = "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        else:
            query = "SELECT * FROM events WHERE job = ? AND id > ? ORDER BY id LIMIT ?"
            args = (job, after, limit)  # type: ignore[assignment]
        rows = self._db.execute(query, args).fetchall()
        return [Event(i, j, k, t, json.loads(d)) for i, j, k, t, d in rows]

    @staticmethod
    def _event(
        db: sqlite3.Connection, id_: str, kind: str, now: float, data: dict[str, Any]
    ) -> None:
        db.execute(
            "INSERT INTO events (job, kind, time, data) VALUES (?, ?, ?, ?)",
            (id_, kind, now, json.dumps(data)),
        )


class NoRoom(InvalidRequest):
    """More new jobs than the queue has room for."""

    def __init__(self, room: int) -> None:
        super().__init__(f"the queue has room for {room} new job(s) now")
        self.room = room


def _check_private(state_dir: Path) -> None:
    """Raise PermissionError unless ``state_dir`` is a directory of this user's that no one
    else may write: its jobs are run as they stand (URL, name), so whoever else made it first
    (a ``--state-dir`` in /tmp) or may write it could queue downloads to any path. Nor is it
    a link another user made: they could point it at a directory of theirs at any time."""
    link = os.lstat(state_dir)
    if stat.S_ISLNK(link.st_mode) and not is_trusted_owner(link):
        raise PermissionError(
            errno.EPERM,
            f"it is a link of uid {link.st_uid}'s, who can point it elsewhere at any time "
            "(name the directory itself)",
        )
    st = os.stat(state_dir)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == current_uid() and not st.st_mode & 0o022:
        return
    raise PermissionError(
        errno.EPERM,
        f"it is uid {st.st_uid}'s, {stat.filemode(st.st_mode)}, and whoever else may write it "
        "could add jobs that download to any path (it must be yours, chmod 700)",
    )


def _check_own_files(state_dir: Path) -> None:
    """Raise PermissionError if the job store or its lock in ``state_dir`` is not a regular
    file of this user's: put there while others could write the directory (before a chmod
    700), it may hold their jobs, or be a link to their store."""
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal", LOCK_NAME):
        try:
            st = os.lstat(state_dir / name)
        except FileNotFoundError:
            continue
        if is_own_file(st):
            continue
        raise PermissionError(
            errno.EPERM,
            f"{name} in it is uid {st.st_uid}'s, {stat.filemode(st.st_mode)}, made while "
            "others could write it: it may hold their jobs (remove it: the queue starts empty)",
        )


def lock_state_dir(state_dir: Path) -> int:
    """Create ``state_dir`` (private) and take its service lock; returns the lock's file
    descriptor, to hold while serving (closing it lets go).

    Raises:
        InvalidRequest: another process holds the lock (another ``serve`` uses this store).
        DestinationError: the directory or lock file cannot be made, or the directory is
            another user's or others may write it, or so is a directory above it (they could
            move it away and put theirs in its place), or its job store is another user's.
    """
    lock = state_dir / LOCK_NAME
    try:
        check_parents(state_dir)  # before anything is made: not through another user's link
        make_private_dirs(state_dir)
        _check_private(state_dir)
        check_parents(state_dir)  # and again, with what was made
        _check_own_files(state_dir)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise DestinationError(
            f"cannot use {state_dir} as the service's state dir: {exc.strerror or exc}; pick "
            "another --state-dir",
            path=str(state_dir),
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
        os.close(fd)
        raise InvalidRequest(
            f"another asyncfetch serve (pid {holder}) uses the state dir {state_dir}; stop it, "
            "or give this one another --state-dir (one service per job store)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
