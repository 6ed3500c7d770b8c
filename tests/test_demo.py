"""``make demo`` (benchmarks/demo.py), on a small model: where it keeps its checkpoint, and
that the bar and the text measure in the same unit."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from benchmarks import demo
from tests.helpers import REPO_ROOT


def test_the_default_checkpoint_dir_is_in_the_repo_and_ignored_by_git() -> None:
    assert demo.DEMO_DIR.parent == REPO_ROOT
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(demo.DEMO_DIR / demo.VERSION / demo.CHECKPOINT)],
        cwd=REPO_ROOT,
        check=False,
    )
    assert ignored.returncode == 0


@pytest.mark.torch
def test_the_demo_keeps_the_checkpoint_in_its_dir_and_speaks_mb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "LAYERS", 2)  # 2 x (1024 x 1024 + 1024) float32: 8.4 MB
    monkeypatch.setattr(demo, "WIDTH", 1024)
    where = tmp_path / "demo"

    assert demo.main(["--dir", str(where)]) == 0

    out, err = capsys.readouterr()
    checkpoint = where / demo.VERSION / demo.CHECKPOINT
    size_mb = checkpoint.stat().st_size / 1e6
    assert sorted(p.name for p in where.iterdir()) == [demo.VERSION]  # the download is gone
    said = re.search(r"downloaded (\d+) MB in", out)
    assert said, out
    assert int(said[1]) == round(size_mb)
    done, total = re.findall(r"([\d.]+)MB?/([\d.]+)MB? ", err)[-1]  # tqdm: "8.40M/8.40M [..."
    assert float(done) == float(total) == pytest.approx(size_mb, abs=0.01)
