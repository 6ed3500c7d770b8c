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


def test_version_imports_neither_aiohttp_nor_torch() -> None:
    code = (
        "import runpy, sys; sys.argv = ['asyncfetch', '--version']\n"
        "try:\n"
        "    runpy.run_module('asyncfetch', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print(sorted({'aiohttp', 'torch', 'tqdm'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True
    )
    assert done.stdout.splitlines()[-1] == "[]"
