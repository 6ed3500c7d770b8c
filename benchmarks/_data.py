"""Benchmark inputs: files of real random bytes, generated once per data dir, with their SHA-256.

Every byte comes from ``os.urandom`` (no repeated block), so no tool can profit from
compressible or repeating data. A :class:`DataFile` may stand for many files of one size (a
batch), or for a torch checkpoint (``torch.save`` of random float32 tensors, written by a
child interpreter). A manifest (``manifest.json``) records each file's size, mtime and
SHA-256, so later runs reuse the files without generating or hashing them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmarks._log import log

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
GENERATE_BLOCK = 16 * MIB
READ_BLOCK = 8 * MIB
MANIFEST = "manifest.json"
CHECKPOINT_TIMEOUT_S = 600.0

Kind = Literal["random", "checkpoint"]

CHECKPOINT_SNIPPET = """\
import sys, torch
path, size = sys.argv[1], int(sys.argv[2])
width = 2048
generator = torch.Generator().manual_seed(0)
layers = max(1, round(size / (width * width * 4)))
state = {f"layers.{i}.weight": torch.randn(width, width, generator=generator)
         for i in range(layers)}
torch.save(state, path)
"""


@dataclass(frozen=True)
class DataFile:
    """Files the benchmark serves.

    Attributes:
        name: the file's name below the served root; with ``count`` > 1, a directory.
        size: bytes per file (for a checkpoint: about; the tensors round it).
        count: how many files of that size (named ``NAME/000.bin``, ...).
        kind: ``random`` bytes, or a torch ``checkpoint``.
    """

    name: str
    size: int
    count: int = 1
    kind: Kind = "random"

    def members(self) -> list[str]:
        """The names of the files, relative to the served root."""
        if self.count == 1:
            return [self.name]
        return [f"{self.name}/{i:03d}.bin" for i in range(self.count)]


@dataclass(frozen=True)
class Prepared:
    """A generated file on disk and its known SHA-256."""

    name: str
    path: Path
    size: int
    sha256: str


def served_root(data_dir: Path) -> Path:
    """Return the directory nginx serves (the generated files live here)."""
    return data_dir / "files"


def ensure_files(data_dir: Path, specs: list[DataFile], python: str) -> dict[str, list[Prepared]]:
    """Generate the files that are missing or stale; return each spec's files by spec name.

    ``python`` is the interpreter that writes checkpoints (it must import torch).
    """
    root = served_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = data_dir / MANIFEST
    manifest = _load_manifest(manifest_path)
    prepared: dict[str, list[Prepared]] = {}
    for spec in specs:
        stale = [m for m in spec.members() if not _is_current(root / m, spec, manifest.get(m))]
        if stale:
            log(f"data: generating {len(stale)} x {spec.name} ({spec.kind}, "
                f"{spec.size / GIB:.2f} GiB each)")  # fmt: skip
        for member in stale:
            manifest[member] = _generate(root / member, spec, python)
            _save_manifest(manifest_path, manifest)
        prepared[spec.name] = [
            Prepared(m, root / m, int(str(manifest[m]["size"])), str(manifest[m]["sha256"]))
            for m in spec.members()
        ]
    return prepared


def _load_manifest(path: Path) -> dict[str, dict[str, object]]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _save_manifest(path: Path, manifest: dict[str, dict[str, object]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _is_current(path: Path, spec: DataFile, entry: dict[str, object] | None) -> bool:
    if entry is None or entry.get("spec_size", entry.get("size")) != spec.size:
        return False
    if entry.get("kind", "random") != spec.kind:
        return False
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    return st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns")


def _generate(path: Path, spec: DataFile, python: str) -> dict[str, object]:
    """Write the file (atomically) and return its manifest entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if spec.kind == "checkpoint":
        subprocess.run([python, "-c", CHECKPOINT_SNIPPET, str(tmp), str(spec.size)],
                       check=True, timeout=CHECKPOINT_TIMEOUT_S)  # fmt: skip
        digest = sha256_file(tmp)
    else:
        digest = _write_random(tmp, spec.size)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    st = path.stat()
    return {"size": st.st_size, "sha256": digest, "mtime_ns": st.st_mtime_ns,
            "spec_size": spec.size, "kind": spec.kind}  # fmt: skip


def _write_random(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``, hashing them on the way; return the digest."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        remaining = size
        while remaining > 0:
            block = os.urandom(min(GENERATE_BLOCK, remaining))
            digest.update(block)
            f.write(block)
            remaining -= len(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file (hashlib, one thread)."""
    digest = hashlib.sha256()
    buf = bytearray(READ_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def warm(path: Path) -> None:
    """Read a file once so that it sits in the page cache before it is served."""
    buf = bytearray(READ_BLOCK)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def samples_match(source: Path, copy: Path, size: int, windows: int = 16) -> bool:
    """Compare ``windows`` evenly spaced 1 MiB windows (first and last included) of two files.

    A cheap check for tools that do not verify and for runs where hashing 4 GiB would
    cost more than the download.
    """
    window = min(MIB, size)
    last = size - window
    offsets = sorted({last * i // max(windows - 1, 1) for i in range(windows)})
    with open(source, "rb", buffering=0) as a, open(copy, "rb", buffering=0) as b:
        for offset in offsets:
            if os.pread(a.fileno(), window, offset) != os.pread(b.fileno(), window, offset):
                return False
    return True
