"""``make demo``: serve a real torch checkpoint on 127.0.0.1, fetch it with asyncfetch, load it.

1. Builds a model of ``nn.Linear`` layers (~300 MB of float32 weights) and ``torch.save``s its
   state_dict, once: the checkpoint and its SHA-256 are kept in ``DIR/vN``, where DIR is
   ``--dir`` or ``.demo/`` in the repository (ignored by git); never a shared ``/tmp`` folder
   that another job could fill or change.
2. Starts a small aiohttp server (``web.FileResponse`` answers Range requests) in a child
   process on a free 127.0.0.1 port.
3. Downloads the checkpoint into a fresh directory in DIR (or ``--keep DIR``) with
   ``asyncfetch.download(..., sha256=...)`` and a progress bar, then ``torch.load``s it with
   ``weights_only=True`` and prints what it holds. Sizes and speeds are in decimal MB, on the
   bar and in the text.

Exits 0 when the file arrived verified and loaded; 1 (with the reason on stderr) otherwise.
Run: ``.venv/bin/python benchmarks/demo.py [--dir DIR] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VERSION = "v1"  # bump when the model below changes: the cached checkpoint is rebuilt
DEMO_DIR = Path(__file__).resolve().parent.parent / ".demo"  # in the repo, ignored by git
CHECKPOINT = "linear-stack.pt"
WIDTH = 2048
LAYERS = 18  # 18 x (2048 x 2048 + 2048) float32 = 302 MB
SEED = 0
SERVER_START_S = 30.0
HASH_BLOCK = 8 << 20
SHOW_KEYS = 4


def build_checkpoint(path: Path) -> str:
    """Save the state_dict of a stack of ``nn.Linear`` layers to ``path``; return its SHA-256.

    Written to a temporary name first, so an interrupted build never looks finished.
    """
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    model = nn.Sequential(*(nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    digest = sha256_of(tmp)
    os.replace(tmp, path)
    return digest


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def cached_checkpoint(directory: Path) -> tuple[Path, str]:
    """The demo checkpoint in ``directory`` and its SHA-256, built on first use."""
    path = directory / VERSION / CHECKPOINT
    digest_file = path.with_name(path.name + ".sha256")
    if path.is_file() and digest_file.is_file():
        digest = digest_file.read_text().strip()
        if len(digest) == 64 and path.stat().st_mtime_ns <= digest_file.stat().st_mtime_ns:
            print(f"checkpoint: cached {path}")
            return path, digest
    print(f"checkpoint: building {path} ({LAYERS} x nn.Linear({WIDTH}, {WIDTH}))", flush=True)
    started = time.perf_counter()
    digest = build_checkpoint(path)
    digest_file.write_text(digest + "\n")
    print(f"checkpoint: built in {time.perf_counter() - started:.1f} s")
    return path, digest


# The mirror: a child process, so that serving and downloading do not share one GIL. --------


def serve(root: Path) -> None:
    """Serve the files in ``root`` on a free 127.0.0.1 port; print the port, run until killed."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        path = root / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)  # answers Range, HEAD, If-Range; sends with sendfile

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{name}", handle)  # GET routes answer HEAD too
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class Mirror:
    """The serving child process, for a ``with`` block; ``url()`` names a file on it."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0

    def url(self, name: str) -> str:
        """The URL of ``name`` on this mirror."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> Mirror:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self._root)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()  # the port, once it listens
        if not line.isdigit():
            self.__exit__(None, None, None)
            raise RuntimeError(f"the demo server did not start (it printed {line!r})")
        self.port = int(line)
        return self

    def __exit__(self, *exc_info: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=SERVER_START_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# The demo itself. ----------------------------------------------------------------------------


def fetch_and_load(url: str, dest: Path, sha256: str) -> int:
    """Download ``url`` verified, load it with torch, print a summary; return the exit status."""
    import asyncfetch
    from asyncfetch._engine.progress import ProgressBar

    bar = ProgressBar(dest.name)  # explicit: `make demo` may run off a terminal
    try:
        result = asyncfetch.download(url, dest, sha256=sha256, progress=bar)
    except asyncfetch.FetchError as exc:
        print(f"demo: download failed: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    if result.sha256 != sha256 or dest.stat().st_size != result.size:
        print(f"demo: {dest} does not match the checkpoint (sha256 {result.sha256})",
              file=sys.stderr)  # fmt: skip
        return 1

    import torch

    started = time.perf_counter()
    state = torch.load(dest, map_location="cpu", weights_only=True)
    load_s = time.perf_counter() - started
    params = sum(t.numel() for t in state.values())
    print(f"\ndownloaded {result.size / 1e6:.0f} MB in {result.elapsed:.2f} s "
          f"({result.speed / 1e6:.0f} MB/s), sha256 {result.sha256} (verified)")  # fmt: skip
    print(f"torch.load: {len(state)} tensors, {params / 1e6:.1f} M parameters in {load_s:.2f} s")
    for name, tensor in list(state.items())[:SHOW_KEYS]:
        print(f"  {name:<12} {tuple(tensor.shape)} {tensor.dtype}")
    print(f"  ... and {len(state) - SHOW_KEYS} more")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the checkpoint, serve it, download, verify and load it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, default=DEMO_DIR, help="where the checkpoint is kept (.demo/)"
    )
    parser.add_argument("--keep", type=Path, help="download into this dir and keep the file")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the server child
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    try:
        source, sha256 = cached_checkpoint(args.dir)
        with (
            tempfile.TemporaryDirectory(prefix="download-", dir=args.dir) as tmp,
            Mirror(source.parent) as mirror,
        ):
            out_dir = args.keep or Path(tmp)
            out_dir.mkdir(parents=True, exist_ok=True)
            url = mirror.url(source.name)
            print(f"serving {source.name} at {url}")
            return fetch_and_load(url, out_dir / source.name, sha256)
    except (OSError, RuntimeError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
