"""The docs stay true to the code: the package tree in docs/how-it-works.md lists exactly the
package's modules, and every relative link in README.md and docs/ leads to a file."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

DOCS = REPO_ROOT / "docs"
PAGES = [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def drawn_tree(text: str) -> set[str]:
    """The module paths the first fenced block after "## The package tree" draws."""
    block = text.split("## The package tree", 1)[1].split("```", 2)[1]
    paths: set[str] = set()
    folder = ""
    for line in block.splitlines():
        name = line.split()[0] if line.strip() else ""
        depth = (len(line) - len(line.lstrip())) // 2
        if not name or depth == 0:  # the "asyncfetch/" root
            continue
        if depth == 1:
            folder = name if name.endswith("/") else ""
            if not name.endswith("/"):
                paths.add(name)
        else:
            paths.add(folder + name)
    return paths


def test_how_it_works_draws_every_module_of_the_package() -> None:
    package = REPO_ROOT / "asyncfetch"
    modules = {
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if not (p.name == "__init__.py" and p.parent != package)  # a folder stands for it
    }
    assert drawn_tree((DOCS / "how-it-works.md").read_text()) == modules


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_lead_to_files(page: Path) -> None:
    for target, _ in LINK.findall(page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def _options(parser: argparse.ArgumentParser) -> list[set[str]]:
    """The option strings of each option of ``parser`` and its subcommands, less --help."""
    found: list[set[str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _options(sub)
        elif action.option_strings and "--help" not in action.option_strings:
            found.append(set(action.option_strings))
    return found


def _synopses(text: str) -> dict[str, set[str]]:
    """The options each ``asyncfetch COMMAND`` synopsis in the fenced blocks shows."""
    shown: dict[str, set[str]] = {}
    command = ""
    for block in text.split("```")[1::2]:
        for line in block.splitlines():
            if line.startswith("asyncfetch "):
                command = line.split()[1]
            elif not line.startswith(" "):
                command = ""
            if command and not command.startswith("-"):
                options = re.findall(r"(?<![\w-])(--?[a-zA-Z][a-z0-9-]*)", line)
                shown.setdefault(command, set()).update(options)
    return shown


@pytest.mark.parametrize("command", ["get", "batch", "mirrors", "cache", "serve", "submit", "jobs"])
def test_the_command_line_page_shows_every_option_of_every_command(command: str) -> None:
    from asyncfetch._cli.main import build_parser

    commands = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    options = _options(commands[command])
    shown = _synopses((DOCS / "cli.md").read_text()).get(command, set())
    assert [o for o in options if not o & shown] == []  # options the page leaves out
    assert shown - set().union(*options) == set()  # options the page shows that do not exist
    assert set(commands) == {"get", "batch", "mirrors", "cache", "serve", "submit", "jobs"}
