"""The package's shape: imports flow one way, outside libraries stay in their module, and the
public names are exactly the sorted ``__all__``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import asyncfetch
from tests.faultserver import FaultServer

PACKAGE = Path(asyncfetch.__file__).parent

# The floor plan: vocabulary → storage and transport → cache → engine → batch → facades → entry
# points. A unit is a top-level module or a subpackage; nothing imports a unit of a higher layer.
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        [
            "_userinfo",
            "_errors",
            "_config",
            "_models",
            "_expectation",
            "_options",
            "_sync",
            "_urls",
            "_version",
        ],
        0,
    ),
    **dict.fromkeys(["_storage", "_transport"], 1),
    "_cache": 2,
    "_engine": 3,
    "_batch": 4,
    **dict.fromkeys(["_api", "_hub", "hub", "cache"], 5),
    **dict.fromkeys(["_service", "_cli", "__main__", "__init__"], 6),
}

# each outside library is touched by the modules named here only
OWNERS: dict[str, set[str]] = {
    # the downloads' client (the transport's client, aioerrors, aiobody, aiosession, heads);
    # the service's server side (its app, the /v1 routes' handlers, listening, error answers);
    # the service's JSON client (small API calls to one service, not ranged downloads)
    "aiohttp": {
        "_transport.client",
        "_transport.aioerrors",
        "_transport.aiobody",
        "_transport.aiosession",
        "_transport.heads",
        "_service.app",
        "_service.routes",
        "_service.listen",
        "_service.failures",
        "_service.client",
        "_service.events",
    },
    "tenacity": {"_engine.retry"},
    "torch": {"hub", "_hub.distributed"},
    "safetensors": {"hub"},
    "filelock": {"_storage.lock", "_hub.distributed"},
    "tqdm": {"_engine.progress"},
    "uvloop": {"_sync", "_transport.rawhttp"},
    "prometheus_client": {"_service.metrics"},
    "truststore": {"_transport.tls"},
    "yarl": {"_urls", "_transport.aiosession"},  # aiohttp's URL type: check_url; the proxies
}


def _dotted(path: Path) -> str:
    """``_engine/fetch.py`` → ``_engine.fetch``; ``_engine/__init__.py`` → ``_engine``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


MODULES = sorted(_dotted(p) for p in PACKAGE.rglob("*.py"))


def unit_of(module: str) -> str:
    """The top-level module or subpackage a module belongs to."""
    return module.split(".")[0]


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(package modules, outside top-level packages) that ``module`` imports, as dotted names
    relative to the package (``_storage.journal``)."""
    is_package = (PACKAGE / module.replace(".", "/") / "__init__.py").exists()
    path = PACKAGE / (module.replace(".", "/") + ("/__init__.py" if is_package else ".py"))
    here = module.split(".") if is_package else module.split(".")[:-1]
    if module == "__init__":
        here = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            anchor = here[: len(here) - (node.level - 1)]
            if node.module:
                inside.add(".".join([*anchor, node.module]))
            else:
                inside.update(".".join([*anchor, alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            outside.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            outside.update(alias.name.split(".")[0] for alias in node.names)
    return inside, outside


def test_every_unit_has_a_layer() -> None:
    assert sorted({unit_of(m) for m in MODULES}) == sorted(LAYERS)


def test_every_subpackage_says_what_it_is() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"{init.parent.name}/ has no one-line docstring in its __init__"


@pytest.mark.parametrize("module", MODULES)
def test_imports_flow_one_way(module: str) -> None:
    inside, _ = imports_of(module)
    mine = LAYERS[unit_of(module)]
    upward = {m for m in inside if LAYERS[unit_of(m)] > mine}
    assert not upward, f"{module} (layer {mine}) imports higher layers: {upward}"


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


def test_importing_the_package_loads_its_names_on_first_use() -> None:
    import subprocess
    import sys

    code = (
        "import sys, asyncfetch\n"
        "before = sorted(m for m in sys.modules if m.startswith('asyncfetch'))\n"
        "asyncfetch.fetch\n"
        "print(before, 'asyncfetch.hub' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['asyncfetch', 'asyncfetch._version'] True"
    lazy = vars(asyncfetch)["_WHERE"]
    assert set(lazy) - {"hub"} == set(asyncfetch.__all__) - {"__version__"}
    for name in asyncfetch.__all__:  # each from the module the TYPE_CHECKING imports name
        assert getattr(asyncfetch, name) is not None


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


# The public keyword arguments that make_options turns into one Options (see asyncfetch._options)
OPTION_KEYWORDS = frozenset(
    {"connections", "chunk_size", "retry", "timeout", "headers", "mirror_headers", "progress",
     "hash", "offline", "verify", "trust_unvouched"}
)  # fmt: skip
# the public entry points, which keep their keywords and build the Options at the edge
EDGES = frozenset(
    {"fetch", "download", "fetch_many", "rank_mirrors", "load_state_dict_from_url",
     "download_url_to_file", "load_pretrained", "make_options"}
)  # fmt: skip


@pytest.mark.parametrize("module", MODULES)
def test_options_travel_as_one_object(module: str) -> None:
    """No private function takes the option keywords: adding an option touches the Options,
    the entry points that expose it and the code that reads it, nothing in between."""
    is_package = (PACKAGE / module.replace(".", "/") / "__init__.py").exists()
    path = PACKAGE / (module.replace(".", "/") + ("/__init__.py" if is_package else ".py"))
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name in EDGES:
            continue
        arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
        taken = OPTION_KEYWORDS & {a.arg for a in arguments}
        assert len(taken) < 3, f"{module}.{node.name} takes the option keywords {sorted(taken)}"
