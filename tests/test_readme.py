"""Every example in README.md runs as written, against loopback servers.

The rules, so that a new example either runs here or fails this test:

- Each fenced block tagged ``python`` runs in a fresh interpreter, in an empty directory,
  with ``TORCH_HOME`` and ``XDG_CACHE_HOME`` under it; it must exit 0.
- Each fenced block tagged ``sh`` is one command per line (``# ...`` comments dropped). A line
  starting with ``asyncfetch`` runs as ``python -m asyncfetch`` from this checkout, in the
  same kind of directory; it must exit 0. A line starting with ``pip install`` or ``make``
  is skipped: those install or build what this suite already runs in. Any other command
  fails the test.
- Every ``https://HOST/.../NAME`` URL in a block is rewritten, before it runs, to
  ``http://127.0.0.1:PORT/files/NAME`` on a fault server standing in for HOST (one server per
  host in :data:`HOSTS`, serving :func:`file_for` NAME); a host not listed fails the test,
  and every rewritten URL must have been asked for by the time the block ends.
"""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.faultserver import FaultServer, make_payload
from tests.helpers import REPO_ROOT, cli_env

README = REPO_ROOT / "README.md"
HOSTS = ("download.pytorch.org", "example.com", "mirror.example.com")
SKIPPED_COMMANDS = ("pip install", "make ")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
URL = re.compile(r"https://[^\s\"'<>)\]]+")
TIMEOUT_S = 120


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block in ``text``."""
    return [(m[1], m[2]) for m in FENCE.finditer(text)]


def runnable_blocks() -> list[tuple[str, str]]:
    """The README's python and sh blocks (others, such as ``toml``, are not examples)."""
    return [(lang, code) for lang, code in blocks(README.read_text()) if lang in ("python", "sh")]


def file_for(name: str) -> bytes:
    """What a stand-in server serves as ``name``: a torch checkpoint for ``.pth``, else bytes."""
    if name.endswith(".pth"):
        import torch

        buffer = io.BytesIO()
        torch.save({"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.zeros(2)}, buffer)
        return buffer.getvalue()
    return make_payload((1 << 20) + 7)


@pytest.fixture
def hosts() -> Iterator[dict[str, FaultServer]]:
    """A started fault server per README host."""
    servers = {host: FaultServer().start() for host in HOSTS}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def rewrite(code: str, hosts: dict[str, FaultServer]) -> tuple[str, list[tuple[str, str]]]:
    """``code`` with its example URLs pointing at the stand-in servers, and the (host, name)
    of each URL rewritten."""
    asked: list[tuple[str, str]] = []

    def to_loopback(match: re.Match[str]) -> str:
        parts = urlsplit(match[0])
        host, name = parts.hostname or "", parts.path.rsplit("/", 1)[-1]
        assert host in hosts, f"README example URL {match[0]} has no stand-in server"
        if name not in {n for h, n in asked if h == host}:
            hosts[host].add_file(name, file_for(name))
        asked.append((host, name))
        return hosts[host].url(name)

    return URL.sub(to_loopback, code), asked


def run_block(lang: str, code: str, cwd: Path) -> None:
    """Run one rewritten block in ``cwd``; fail with its output unless it succeeds."""
    env = cli_env(TORCH_HOME=str(cwd / "torch"), XDG_CACHE_HOME=str(cwd / "cache"))
    if lang == "python":
        commands = [[sys.executable, "-c", code]]
    else:
        commands = [command(line) for line in code.splitlines() if command(line)]
    for argv in commands:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
        assert done.returncode == 0, f"{shlex.join(argv[:4])}...\n{done.stdout}\n{done.stderr}"


def command(line: str) -> list[str]:
    """The argv for one line of an ``sh`` block, or [] for a skipped or empty line."""
    words = shlex.split(line, comments=True)
    text = " ".join(words)
    if not words or text.startswith(SKIPPED_COMMANDS) or text == "make":
        return []
    assert words[0] == "asyncfetch", f"README sh line {line!r}: no rule to run it (see above)"
    return [sys.executable, "-m", "asyncfetch", *words[1:]]


def test_the_readme_has_examples_of_each_kind() -> None:
    langs = [lang for lang, _ in runnable_blocks()]
    assert langs.count("python") >= 2
    assert langs.count("sh") >= 1


def test_the_readme_is_short() -> None:
    assert len(README.read_bytes()) < 10_000


@pytest.mark.torch
@pytest.mark.parametrize("index", range(len(runnable_blocks())))
def test_readme_example_runs(index: int, hosts: dict[str, FaultServer], tmp_path: Path) -> None:
    lang, code = runnable_blocks()[index]
    rewritten, asked = rewrite(code, hosts)
    run_block(lang, rewritten, tmp_path)
    for host, name in asked:
        paths = {r.path for r in hosts[host].requests}
        assert f"/files/{name}" in paths, f"the example never asked {host} for {name}"
