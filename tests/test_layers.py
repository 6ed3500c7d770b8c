"""The package's shape: imports flow one way, outside libraries stay in their module, and the
public names are exactly the sorted ``__all__``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import asyncfetch
from tests.faultserver import FaultServer

PACKAGE = Path(asyncfetch.__file__).parent

# vocabulary → pure logic → I/O pieces → engine → batch → facades → entry points
LAYERS: dict[str, int] = {
    **dict.fromkeys(["_userinfo", "_errors", "_config", "_models"], 0),
    **dict.fromkeys(
        [
            "_planner",
            "_mirrors",
            "_journal",
            "_hasher",
            "_marker",
            "_http",
            "_lock",
            "_partguard",
            "_dest",
            "_budget",
            "_sync",
            "_netpolicy",
        ],
        1,
    ),  # fmt: skip
    **dict.fromkeys(
        [
            "_retry",
            "_rawconn",
            "_rawhttp",
            "_credentials",
            "_transport",
            "_parts",
            "_sink",
            "_cache",
            "_cachedir",
            "_progress",
        ],
        2,
    ),  # fmt: skip
    **dict.fromkeys(["_probe", "_blame", "_request", "_download", "_engine", "_rank"], 3),
    **dict.fromkeys(["_batch", "_manifest"], 4),
    **dict.fromkeys(
        ["_api", "_registry", "_distributed", "_adapt", "_hubfile", "hub", "cache"], 5
    ),  # fmt: skip
    **dict.fromkeys(
        [
            "_service",
            "_service_guard",
            "_service_limits",
            "_service_log",
            "_service_order",
            "_cli",
            "_cli_batch",
            "_cli_cache",
            "_cli_options",
            "__main__",
            "__init__",
        ],
        6,
    ),  # fmt: skip
}

# each outside library is touched by the modules named here only
OWNERS: dict[str, set[str]] = {
    "aiohttp": {"_transport", "_service"},  # the client, and the service's server side
    "tenacity": {"_retry"},
    "torch": {"hub", "_distributed"},
    "safetensors": {"hub"},
    "filelock": {"_lock", "_distributed"},
    "tqdm": {"_progress"},
    "uvloop": {"_sync", "_rawhttp"},
}


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(package modules, outside top-level packages) that ``module`` imports."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                inside.add(node.module)
            else:
                inside.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            outside.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            outside.update(alias.name.split(".")[0] for alias in node.names)
    return inside, outside


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def test_every_module_has_a_layer() -> None:
    assert sorted(LAYERS) == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_imports_flow_one_way(module: str) -> None:
    inside, _ = imports_of(module)
    upward = {m for m in inside if LAYERS[m] > LAYERS[module]}
    assert not upward, f"{module} (layer {LAYERS[module]}) imports higher layers: {upward}"


@pytest.mark.parametrize("module", MODULES)
def test_outside_libraries_stay_in_their_module(module: str) -> None:
    _, outside = imports_of(module)
    strays = {lib for lib, owners in OWNERS.items() if lib in outside and module not in owners}
    assert not strays, f"{module} imports {strays}; only {[OWNERS[s] for s in strays]} may"


def test_exported_members() -> None:
    exported = asyncfetch.__all__
    assert exported == sorted(exported)
    assert len(set(exported)) == len(exported)
    for name in exported:
        assert hasattr(asyncfetch, name), name
        assert not name.startswith("_") or name == "__version__"
    public = {n for n in vars(asyncfetch) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(asyncfetch, n)).__name__ == "module"}
    assert public - modules - {"annotations"} <= set(exported)


def test_importing_the_package_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, asyncfetch; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_cache_hit_does_not_import_aiohttp(tmp_path: Path) -> None:
    import subprocess
    import sys

    cached = tmp_path / "model.bin"
    cached.write_bytes(b"weights")
    code = (
        "import sys, asyncfetch; "
        f"r = asyncfetch.download('http://127.0.0.1:9/model.bin', {str(cached)!r}, offline=True); "
        "print(r.cached, 'aiohttp' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"]


def test_a_plain_http_download_does_not_import_aiohttp(server: FaultServer, tmp_path: Path) -> None:
    """Probe and ranges both take the fast path, so aiohttp's import (~0.1 s) is not paid."""
    import subprocess
    import sys

    data = bytes(range(256)) * 4096
    url = server.add_file("plain.bin", data)
    dest = tmp_path / "plain.bin"
    code = (
        "import sys, asyncfetch; "
        f"asyncfetch.download({url!r}, {str(dest)!r}, connections=4, chunk_size=65536); "
        "print('aiohttp' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    assert dest.read_bytes() == data
    assert [r.method for r in server.requests][0] == "HEAD"
