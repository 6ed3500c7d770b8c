"""Benchmark inputs: files of real random bytes, generated once per data dir, with their SHA-256.

Every byte comes from ``os.urandom`` (no repeated block), so no tool can profit from
compressible or repeating data. A manifest (``manifest.json``) records each file's size,
mtime and SHA-256, so later runs reuse the files without generating or hashing them again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks._log import log

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
GENERATE_BLOCK = 16 * MIB
READ_BLOCK = 8 * MIB
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DataFile:
    """A file the benchmark serves: its name below the served root and its size in bytes."""

    name: str
    size: int


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


def ensure_files(data_dir: Path, specs: list[DataFile]) -> dict[str, Prepared]:
    """Generate the files that are missing or stale; return every file by name."""
    root = served_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = data_dir / MANIFEST
    manifest = _load_manifest(manifest_path)
    prepared: dict[str, Prepared] = {}
    for spec in specs:
        path = root / spec.name
        if not _is_current(path, spec, manifest.get(spec.name)):
            log(f"data: generating {spec.name} ({spec.size / GIB:.2f} GiB of os.urandom)")
            manifest[spec.name] = _generate(path, spec.size)
            _save_manifest(manifest_path, manifest)
        entry = manifest[spec.name]
        prepared[spec.name] = Prepared(spec.name, path, spec.size, str(entry["sha256"]))
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
    if entry is None or entry.get("size") != spec.size:
        return False
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    return st.st_size == spec.size and st.st_mtime_ns == entry.get("mtime_ns")


def _generate(path: Path, size: int) -> dict[str, object]:
    """Write ``size`` random bytes to ``path`` (atomically), hashing them on the way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        remaining = size
        while remaining > 0:
            block = os.urandom(min(GENERATE_BLOCK, remaining))
            digest.update(block)
            f.write(block)
            remaining -= len(block)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return {"size": size, "sha256": digest.hexdigest(), "mtime_ns": path.stat().st_mtime_ns}


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
