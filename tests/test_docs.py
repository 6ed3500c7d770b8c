"""The docs stay true to the code: the package tree in docs/how-it-works.md lists exactly the
package's modules, and every relative link in README.md and docs/ leads to a file."""

from __future__ import annotations

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
