"""torch and safetensors are an extra (``asyncfetch[torch]``): without them every command and
the byte-moving API work, and the loading drop-ins say which extra to install.

Each test runs a child interpreter in which ``import torch`` and ``import safetensors`` fail as
they do where neither is installed (``sys.modules[name] = None``), against a loopback server.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.faultserver import FaultServer
from tests.helpers import REPO_ROOT, cli_env, sha256

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXTRA = ("torch", "safetensors")
CLI = (
    "import runpy; sys.argv = ['asyncfetch', *sys.argv[1:]]\n"
    "runpy.run_module('asyncfetch', run_name='__main__', alter_sys=True)\n"
)
TIMEOUT_S = 60


def blocking(modules: Sequence[str]) -> str:
    """Python that makes ``import NAME`` fail for each of ``modules``, as if not installed."""
    return "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in modules)


def without_torch(
    code: str, *args: str, missing: Sequence[str] = EXTRA, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``args`` in a child where ``missing`` cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", blocking(missing) + code, *args],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=cli_env(**env), check=False,
    )  # fmt: skip


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``asyncfetch ARGS`` in a child without torch and safetensors."""
    return without_torch(CLI, *args, **env)


def test_torch_and_safetensors_are_the_torch_extra() -> None:
    """Declared as ``asyncfetch[torch]``, not required; ``serve`` is an extra too (empty while
    aiohttp.web, part of aiohttp, is all the service needs), and aiofiles is gone."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    required = {re.split(r"[<>=; \[]", spec)[0] for spec in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert not required & {"torch", "safetensors", "aiofiles"}
    torch_extra = {re.split(r"[<>=; ]", spec)[0] for spec in extras["torch"]}
    assert torch_extra == {*EXTRA, "numpy"}  # numpy: torch warns at import without it
    assert "serve" in extras
    assert "'.[dev,torch,serve]'" in (REPO_ROOT / "Makefile").read_text()  # make installs all


def test_the_package_imports_without_torch() -> None:
    done = without_torch("import asyncfetch; print(asyncfetch.__version__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == __import__("asyncfetch").__version__


def test_get_downloads_without_torch(server: FaultServer, payload: bytes, tmp_path: Path) -> None:
    url = server.add_file("m.bin", payload)
    done = cli("get", url, "-o", str(tmp_path / "m.bin"), "--sha256", sha256(payload))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.bin").read_bytes() == payload


def test_get_into_the_cache_without_torch(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    """The default destination is torch.hub's cache dir, found without torch."""
    url = server.add_file("m.bin", payload)
    done = cli("get", url, TORCH_HOME=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "hub" / "checkpoints" / "m.bin").read_bytes() == payload


def test_batch_downloads_without_torch(server: FaultServer, payload: bytes, tmp_path: Path) -> None:
    urls = [server.add_file(f"{n}.bin", payload[n:]) for n in range(3)]
    manifest = tmp_path / "files.txt"
    manifest.write_text("\n".join(urls) + "\n")
    done = cli("batch", str(manifest), "--dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    for n in range(3):
        assert (tmp_path / "out" / f"{n}.bin").read_bytes() == payload[n:]


def test_mirrors_ranks_without_torch(
    server: FaultServer, make_server: Callable[[], FaultServer], payload: bytes
) -> None:
    urls = [server.add_file("m.bin", payload), make_server().add_file("m.bin", payload)]
    done = cli("mirrors", *urls, "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["ok"] for line in done.stdout.splitlines()] == [True, True]


def test_cache_lists_and_verifies_a_download_without_torch(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", payload)
    assert cli("get", url, "--dir", str(tmp_path)).returncode == 0
    listed = cli("cache", "ls", "--json", "--dir", str(tmp_path))
    verified = cli("cache", "verify", "--dir", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == ["m.bin"]
    assert verified.returncode == 0, verified.stderr


@contextlib.contextmanager
def serving(cache_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``asyncfetch serve --port 0`` without torch, allowed to fetch from the loopback fault
    server, and its URL; stopped at exit."""
    argv = [
        sys.executable,
        "-c",
        blocking(EXTRA) + CLI,
        "serve",
        "--port",
        "0",
        "--cache-dir",
        str(cache_dir),
        "--allow-private",
    ]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
    )
    try:
        assert process.stdout is not None
        found = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline())
        assert found, "serve printed no URL"
        yield process, found[0]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=TIMEOUT_S)


def test_serve_downloads_and_serves_without_torch(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", payload)
    with serving(tmp_path) as (process, service):
        order = urllib.request.Request(
            f"{service}/fetch",
            data=json.dumps({"url": url, "sha256": sha256(payload)}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(order, timeout=TIMEOUT_S) as answer:
            fetched = json.loads(answer.read())
        with urllib.request.urlopen(f"{service}/files/m.bin", timeout=TIMEOUT_S) as answer:
            served = answer.read()
    assert fetched["sha256"] == sha256(payload)
    assert served == payload
    assert process.returncode == 0


def test_download_url_to_file_needs_no_torch(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", payload)
    code = "import asyncfetch; asyncfetch.download_url_to_file(*sys.argv[1:], progress=False)"
    done = without_torch(code, url, str(tmp_path / "m.bin"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.bin").read_bytes() == payload


LOAD = "asyncfetch.load_state_dict_from_url(sys.argv[1], model_dir=sys.argv[2])"


@pytest.mark.parametrize(
    ("call", "name", "missing"),
    [
        (LOAD, "m.pth", EXTRA),
        (LOAD, "m.safetensors", EXTRA),
        (LOAD, "m.safetensors", ("safetensors",)),  # torch there, safetensors not
        ("asyncfetch.load_pretrained(None, sys.argv[1], model_dir=sys.argv[2])", "m.pth", EXTRA),
        ("asyncfetch.load_state_dict_from_url(sys.argv[1])", "m.pth", EXTRA),  # default dir
    ],
    ids=["pth", "safetensors", "safetensors-only", "load_pretrained", "default-dir"],
)
def test_the_loading_drop_ins_name_the_extra_before_downloading(
    server: FaultServer,
    payload: bytes,
    tmp_path: Path,
    call: str,
    name: str,
    missing: tuple[str, ...],
) -> None:
    url = server.add_file(name, payload)
    code = (
        "import asyncfetch\n"
        "try:\n"
        f"    {call}\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc.name, exc, sep='|')\n"
    )
    done = without_torch(code, url, str(tmp_path), missing=missing, TORCH_HOME=str(tmp_path))
    assert done.returncode == 0, done.stderr
    kind, module, message = done.stdout.strip().split("|")
    assert (kind, module) == ("ModuleNotFoundError", missing[0])
    assert "pip install 'asyncfetch[torch]'" in message
    assert server.requests == []  # nothing downloaded that could not be loaded
