"""Small helpers shared by the tests."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncfetch import RetryPolicy
from asyncfetch._cache import records as _records


@pytest.fixture(params=["http", "https"], name="scheme")
def over_http_and_https(request: pytest.FixtureRequest) -> str:
    """The ``scheme`` fixture for a module whose server tests all run over http and https:
    import it there (``from tests.helpers import over_http_and_https``)."""
    scheme: str = request.param
    return scheme


#: (scheme, receive path) of every way a download can go: http and https, each on the fast
#: path (rawhttp) and on aiohttp (ASYNCFETCH_FAST_PATH=0).
RECEIVE_PATHS = [
    pytest.param(("http", "fast"), id="http-fast"),
    pytest.param(("http", "aiohttp"), id="http-aiohttp"),
    pytest.param(("https", "fast"), id="https-fast"),
    pytest.param(("https", "aiohttp"), id="https-aiohttp"),
]


@pytest.fixture(params=RECEIVE_PATHS, name="scheme")
def over_every_receive_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``scheme`` fixture for a module whose server tests all run over every receive path
    (:data:`RECEIVE_PATHS`): import it there, as :func:`over_http_and_https`."""
    scheme, path = request.param
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", "1" if path == "fast" else "0")
    return str(scheme)


#: Runs a test of such a module over http only (on the fast path); say why where it is used.
http_only = pytest.mark.parametrize("scheme", ["http"])


class Sleeps:
    """A sleep for RetryPolicy that records the waits and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def no_wait(attempts: int = 5) -> tuple[RetryPolicy, Sleeps]:
    """A retry policy that never really waits, and the record of what it would have waited."""
    sleeps = Sleeps()
    return RetryPolicy(attempts=attempts, sleep=sleeps), sleeps


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def with_credentials(url: str, userinfo: str) -> str:
    """``url`` with ``userinfo`` (``user:password``) in it: ``http://user:password@host/...``."""
    return url.replace("://", f"://{userinfo}@", 1)


def basic(userinfo: str) -> str:
    """The ``Authorization`` value for Basic auth with ``user:password``."""
    return "Basic " + base64.b64encode(userinfo.encode()).decode()


def leftovers(directory: Path) -> list[str]:
    """Names of files in ``directory``, sorted (a finished download's marker is not among
    them: it is kept elsewhere)."""
    return sorted(p.name for p in directory.iterdir())


def stored_marker(path: Path) -> dict[str, Any]:
    """The marker of ``path`` as it is stored (an extended attribute, or a state record)."""
    found = _records.load(path)
    assert found is not None, f"no marker for {path}"
    return found.data


def store_marker(path: Path, data: dict[str, Any]) -> None:
    """Store ``data`` as the marker of ``path``, unchecked (to test malformed ones)."""
    assert _records.store(path, data)


REPO_ROOT = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for running ``python -m asyncfetch`` from this checkout in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` unwritable even for root: a read-only tmpfs over it (or chmod)."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    with tmpfs(directory, "ro,size=64k"):
        yield


@contextlib.contextmanager
def tmpfs(directory: Path, options: str) -> Iterator[None]:
    """A tmpfs mounted on ``directory`` with mount ``options`` for the block (root only; the
    test is skipped where mounting is not allowed)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {directory}: {mounted.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m asyncfetch ARGS`` from this checkout and capture its output."""
    import sys

    return subprocess.run(
        [sys.executable, "-m", "asyncfetch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(**env),
        check=False,
    )


SPECIAL_KINDS = ("fifo", "char-device")


def make_special(path: Path, kind: str) -> Path:
    """Make a FIFO, or (root only, else the test is skipped) a character device like
    /dev/null, at ``path``."""
    import stat

    if kind == "fifo":
        os.mkfifo(path)
    elif os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    else:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return path


def signal_when(
    argv: list[str], signum: int, ready: Callable[[], bool], *, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Start ``argv`` with :func:`cli_env`, send it ``signum`` once ``ready()`` holds, and return
    what it printed. The child is killed, reaped and its pipes closed whatever happens."""
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready() and child.poll() is None:
            assert time.monotonic() < deadline, "timed out waiting to send the signal"
            time.sleep(0.02)
        assert child.poll() is None, "the child ended before the signal"
        child.send_signal(signum)
        stdout, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait(10)
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
    return subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
