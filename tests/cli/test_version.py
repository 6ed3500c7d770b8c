"""``asyncfetch --version``: one line from the one version source, without the heavy imports."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import asyncfetch
from tests.helpers import cli_env, run_cli


def test_version_prints_the_package_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"asyncfetch {asyncfetch.__version__}\n"
    assert asyncfetch.__version__ == version("asyncfetch")  # pyproject reads the same source


def test_version_imports_next_to_nothing() -> None:
    """Neither the command line nor asyncio, aiohttp or torch: it answers in about the time
    the interpreter takes to start."""
    code = (
        "import runpy, sys; sys.argv = ['asyncfetch', '--version']\n"
        "try:\n"
        "    runpy.run_module('asyncfetch', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "heavy = {'asyncio', 'aiohttp', 'torch', 'tqdm'} & set(sys.modules)\n"
        "print(sorted(heavy), sorted(m for m in sys.modules if m.startswith('asyncfetch')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True
    )
    assert done.stdout.splitlines()[0] == f"asyncfetch {asyncfetch.__version__}"
    assert done.stdout.splitlines()[-1] == "[] ['asyncfetch', 'asyncfetch._version']"


def test_version_among_other_arguments_is_argparse_s_the_same_line() -> None:
    done = run_cli("--version", "get", "http://127.0.0.1:9/x")  # not the bare fast path
    assert (done.returncode, done.stdout) == (0, f"asyncfetch {asyncfetch.__version__}\n")
