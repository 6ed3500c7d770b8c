"""The command line: ``asyncfetch get|...``, built on the public API only."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from . import _api, _cli_cache, _hubfile, _registry
from ._batch import BatchItem, Source, fetch_many
from ._cache import cached_path, checkpoints_dir, ensure_dir
from ._config import RetryPolicy, Timeouts, check_chunk_size, parse_size
from ._errors import FetchError
from ._manifest import read_manifest
from ._models import FetchResult, ProgressCallback
from ._progress import BatchProgress, ProgressBar
from ._rank import MirrorReport, rank_mirrors
from ._sync import run_sync
from ._userinfo import redact

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM

Handler = Callable[[argparse.Namespace], int]


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except FetchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _chunk_size(text: str) -> int | None:
    try:
        return check_chunk_size(text)
    except FetchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _retries(text: str) -> int:
    return _whole_number(text, 0)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _add_get(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    get = commands.add_parser("get", help="download one file, verified")
    get.add_argument("url", help="the file's URL, or a name in the model registry")
    get.add_argument("--registry", type=Path, help="registry TOML file for names (see README)")
    where = get.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", type=Path, help="the output file path")
    where.add_argument("--dir", type=Path, help="directory to put the file in (name from URL)")
    get.add_argument("--mirror", action="append", default=[], help="another URL of the file")
    get.add_argument("--sha256", help="expected SHA-256 (64 hex digits)")
    get.add_argument("--connections", type=_positive_int, default=16, help="default: 16")
    get.add_argument("--chunk-size", type=_chunk_size, help="bytes per request, e.g. 8M")
    get.add_argument("--retries", type=_retries, help="retries per stuck range (default 4)")
    get.add_argument("--timeout", type=_seconds, help="connect and read-idle timeout, seconds")
    get.add_argument("--no-hash", action="store_true", help="skip SHA-256 (no --sha256 only)")
    get.add_argument("--offline", action="store_true", help="use the cache only, no network")
    get.add_argument("--verify", action="store_true", help="re-hash a cached file, never trust")
    _add_output_flags(get)
    get.set_defaults(handler=_get, resumable=True)


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    bars = parser.add_mutually_exclusive_group()
    bars.add_argument("--no-progress", action="store_true", help="never draw progress bars")
    bars.add_argument("--progress", action="store_true", help="draw bars even off a terminal")
    parser.add_argument("--json", action="store_true", help="print one JSON object per result")


def _get(args: argparse.Namespace) -> int:
    dest: Path | None = args.output
    try:
        if _registry.looks_like_name(args.url):
            return _get_name(args)
        if dest is None:  # the cache, as torch.hub's: created when missing
            dest = cached_path(args.url, model_dir=checkpoints_dir(args.dir))
            ensure_dir(dest.parent)
        return _get_url(args, dest)
    except FetchError as exc:
        if args.json:  # the object batch --json prints for a failed file; main() says the rest
            path = dest.expanduser().absolute() if dest is not None else None
            print(json.dumps(_failure_json(args.url, path, exc)), flush=True)
        raise


def _get_url(args: argparse.Namespace, dest: Path) -> int:
    progress = _progress_for(args, dest.name)
    try:
        result = _api.download(
            args.url,
            dest,
            mirrors=args.mirror,
            sha256=args.sha256,
            connections=args.connections,
            chunk_size=args.chunk_size,
            retry=RetryPolicy.coerce(args.retries),
            timeout=Timeouts.coerce(args.timeout),
            progress=progress,
            hash=not args.no_hash,
            offline=True if args.offline else None,
            verify=args.verify,
        )
    finally:
        if isinstance(progress, ProgressBar):
            progress.close()
    _print_result(result, args.json, args.url)
    return EXIT_OK


def _get_name(args: argparse.Namespace) -> int:
    """``get NAME``: the registry entry's URL, mirrors, SHA-256, file name and hash check."""
    source = _hubfile.resolve(
        args.url, mirrors=args.mirror, sha256=args.sha256, registry=args.registry
    )
    cached = cached_path(source.url, model_dir=args.dir, file_name=source.file_name)
    prefix = _hubfile.hash_prefix_of(cached.name, source.url) if source.check_hash else None
    if args.output is None:
        ensure_dir(cached.parent)  # the cache, as torch.hub's: created when missing
    dest = args.output or cached
    options = _hubfile.Options(
        connections=args.connections,
        chunk_size=args.chunk_size,
        retry=RetryPolicy.coerce(args.retries),
        timeout=Timeouts.coerce(args.timeout),
        progress=_progress_for(args, dest.name) is not None,
        hash=not args.no_hash,
        offline=True if args.offline else None,
        verify=args.verify,
    )
    result = _hubfile.get_file(source, dest, prefix, options)
    _print_result(result, args.json, source.url)
    return EXIT_OK


def _progress_for(args: argparse.Namespace, name: str) -> ProgressCallback | None:
    return ProgressBar(name) if _wants_bars(args) else None


def _print_result(result: FetchResult, as_json: bool, url: str | None = None) -> None:
    if as_json:
        url = url or next(iter(result.bytes_by_mirror), None)
        print(json.dumps(result.as_json(url)), flush=True)
        return
    digest = f" sha256={result.sha256}" if result.sha256 else ""
    if result.cached:
        print(f"{result.path} {result.size} bytes (cached){digest}")
        return
    speed = f" ({_rate(result.speed)})" if result.speed > 0 else ""
    print(f"{result.path} {result.size} bytes in {result.elapsed:.2f}s{speed}{digest}")


def _rate(speed: float) -> str:
    """Bytes per second in the largest decimal unit that keeps it at least 1 (kB/s, MB/s, ...)."""
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if speed >= scale:
            return f"{speed / scale:.1f} {unit}"
    return f"{speed:.0f} B/s"


# batch --------------------------------------------------------------------------------------


def _add_batch(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = commands.add_parser("batch", help="download every file a manifest lists")
    batch.add_argument("manifest", type=Path, help="TOML, JSON lines, or one URL per line")
    batch.add_argument("--jobs", type=_positive_int, help="files at once (default: --connections)")
    batch.add_argument(
        "--connections", type=_positive_int, default=16, help="requests in flight in all (16)"
    )
    batch.add_argument("--per-host", type=_positive_int, help="requests in flight per host")
    batch.add_argument("--dir", type=Path, help="where files without a dest go (torch.hub cache)")
    batch.add_argument("--chunk-size", type=_chunk_size, help="bytes per request, e.g. 8M")
    batch.add_argument("--retries", type=_retries, help="retries per stuck range (default 4)")
    batch.add_argument("--timeout", type=_seconds, help="connect and read-idle timeout, seconds")
    batch.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    _add_output_flags(batch)
    batch.set_defaults(handler=_batch, resumable=True)


def _batch(args: argparse.Namespace) -> int:
    sources = read_manifest(args.manifest)
    bars = _wants_bars(args)
    progress = BatchProgress(len(sources)) if bars else None
    try:
        items = run_sync(_run_batch(args, sources, progress))
    finally:
        if progress is not None:
            progress.close()
    if not args.json:
        print(_summary(items), flush=True)
    failed = [item for item in items if not item.ok]
    for item in failed:
        message, url = _item_error(item), redact(item.url)
        if url not in message:
            message = f"{url}: {message}"
        print(f"asyncfetch: error: {message}", file=sys.stderr)
    if args.fail_fast and failed and len(items) < len(sources):
        done = len(items) - len(failed)
        print(f"asyncfetch: stopped after the first failure with {done} of {len(sources)} files "
              "complete; run again to resume", file=sys.stderr)  # fmt: skip
    return EXIT_FAILED if failed else EXIT_OK


def _wants_bars(args: argparse.Namespace) -> bool:
    """Bars on stderr: asked for with --progress, or on a terminal unless --no-progress or
    --json (whose stdout a script reads) turn them off."""
    if args.no_progress or args.json and not args.progress:
        return False
    return bool(args.progress or sys.stderr.isatty())


async def _run_batch(
    args: argparse.Namespace, sources: list[Source], progress: BatchProgress | None
) -> list[BatchItem]:
    items: list[BatchItem] = []
    batch = fetch_many(
        sources, max_files=args.jobs, connections=args.connections, per_host=args.per_host,
        dest_dir=args.dir, chunk_size=args.chunk_size, retry=RetryPolicy.coerce(args.retries),
        timeout=Timeouts.coerce(args.timeout), progress=progress,
    )  # fmt: skip
    async with contextlib.aclosing(batch):
        async for item in batch:
            items.append(item)
            if args.json:
                print(json.dumps(_item_json(item)), flush=True)
            if args.fail_fast and not item.ok:
                break
    return items


def _item_json(item: BatchItem) -> dict[str, Any]:
    if item.result is not None:
        return {**item.result.as_json(item.url), "status": "ok"}
    return _failure_json(item.url, item.path, item.error)


def _failure_json(url: str, path: Path | None, error: BaseException | None) -> dict[str, Any]:
    """What ``--json`` prints for a file that failed (batch and get alike)."""
    return {
        "url": redact(url),
        "path": str(path) if path else None,
        "status": "failed",
        "error": _error_text(error),
        "error_type": type(error).__name__,
    }


def _summary(items: list[BatchItem]) -> str:
    """The table printed at the end of a batch: file, size, time, speed, status."""
    rows = [("file", "size", "time", "speed", "status")]
    for item in sorted(items, key=lambda i: i.index):
        name = str(item.path) if item.path else redact(item.url)
        result = item.result
        if result is None:
            rows.append((name, "-", "-", "-", "FAILED"))
            continue
        rows.append((name, _bytes(result.size), f"{result.elapsed:.2f}s",
                     _rate(result.speed) if result.speed > 0 else "-", "ok"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join([row[0].ljust(widths[0]), *(row[i].rjust(widths[i]) for i in (1, 2, 3)), row[4]])
        for row in rows
    ]
    good = sum(item.ok for item in items)
    total = sum(item.result.size for item in items if item.result is not None)
    lines.append(f"{good} of {len(items)} files ok, {_bytes(total)}")
    return "\n".join(lines)


def _item_error(item: BatchItem) -> str:
    return _error_text(item.error)


def _error_text(error: BaseException | None) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _add_mirrors(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mirrors = commands.add_parser("mirrors", help="rank mirrors of one file by measured speed")
    mirrors.add_argument("urls", nargs="+", metavar="URL", help="URLs of the same file")
    mirrors.add_argument("--sample", type=_size, default=8 << 20, help="bytes to time (8M)")
    mirrors.add_argument("--connections", type=_positive_int, default=4, help="default: 4")
    mirrors.add_argument("--timeout", type=_seconds, help="connect and read-idle timeout, seconds")
    mirrors.add_argument("--json", action="store_true", help="print one JSON object per URL")
    mirrors.set_defaults(handler=_mirrors)


def _mirrors(args: argparse.Namespace) -> int:
    reports = run_sync(
        rank_mirrors(
            args.urls,
            sample=args.sample,
            connections=args.connections,
            timeout=Timeouts.coerce(args.timeout),
        )  # fmt: skip
    )
    if args.json:
        for report in reports:
            print(json.dumps(dataclasses.asdict(report) | {"ok": report.ok}))
    else:
        _print_mirror_table(reports)
    differ = [r for r in reports if r.agrees is False]
    if differ:
        listing = "; ".join(f"{r.url} {r.disagreement}" for r in differ)
        print(f"asyncfetch: error: mirrors disagree: {_one_line_text(listing)}; use only the "
              "URLs that serve the file you expect", file=sys.stderr)  # fmt: skip
    failed = [r for r in reports if r.error]
    if failed:  # a dead mirror fails the command too, so CI notices it
        listing = "; ".join(f"{r.url}: {r.error}" for r in failed)
        print(f"asyncfetch: error: {len(failed)} of {len(reports)} mirrors failed: "
              f"{_one_line_text(listing)}; fix or drop them", file=sys.stderr)  # fmt: skip
    return EXIT_FAILED if differ or failed or not any(r.ok for r in reports) else EXIT_OK


def _print_mirror_table(reports: list[MirrorReport]) -> None:
    print(f"{'#':>2}  {'MB/s':>8}  {'TTFB ms':>8}  {'ranges':>6}  {'size':>12}  {'status':<7}  url")
    for rank, r in enumerate(reports, 1):
        speed = f"{r.speed / 1e6:8.1f}" if r.speed else f"{'-':>8}"
        ttfb = f"{r.ttfb * 1000:8.1f}" if r.ttfb is not None else f"{'-':>8}"
        size = f"{r.size:>12}" if r.size is not None else f"{'?':>12}"
        status = "ok" if r.ok else ("error" if r.error else "differs")
        print(f"{rank:>2}  {speed}  {ttfb}  {'yes' if r.accepts_ranges else 'no':>6}  {size}  "
              f"{status:<7}  {r.url}")  # fmt: skip
        if r.error or r.disagreement:
            print(f"    {_one_line_text(r.error or r.disagreement or '')}")


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="a caching download service and LAN mirror")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8765, help="default: 8765; 0: any free port")
    serve.add_argument("--cache-dir", type=Path, help="default: the torch.hub checkpoint dir")
    serve.add_argument("--max-downloads", type=_positive_int, default=4, help="at once (4)")
    serve.set_defaults(handler=_serve)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def _serve(args: argparse.Namespace) -> int:
    import logging

    from . import _service  # imports aiohttp.web, which only this command needs
    from ._cache import checkpoints_dir

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    cache_dir = args.cache_dir or checkpoints_dir()
    run_sync(
        _service.serve(cache_dir, host=args.host, port=args.port, max_downloads=args.max_downloads)
    )
    print("asyncfetch serve: stopped", file=sys.stderr)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="asyncfetch",
        description="Fast, verified, resumable downloads of large files (model checkpoints).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_get(commands)
    _add_batch(commands)
    _add_mirrors(commands)
    _add_serve(commands)
    _cli_cache.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asyncfetch`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    terminated: list[int] = []
    sigterm = _sigterm_as_sigint(terminated) if getattr(args, "resumable", False) else None
    try:
        with sigterm or contextlib.nullcontext():
            return handler(args)
    except FetchError as exc:
        print(f"asyncfetch: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        stopped = "terminated" if terminated else "interrupted"
        print(f"asyncfetch: {stopped}; run the same command again to resume", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


@contextlib.contextmanager
def _sigterm_as_sigint(received: list[int]) -> Iterator[None]:
    """Within the block, SIGTERM (docker stop, ``timeout``, Slurm) stops the command as Ctrl-C
    does: the downloads stop and keep their parts, journaled. Each SIGTERM is appended to
    ``received``, so the caller can tell it from a Ctrl-C."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        on_sigint = signal.getsignal(signal.SIGINT)  # asyncio's while a loop runs
        if not callable(on_sigint):  # SIG_IGN or SIG_DFL: stop all the same
            on_sigint = signal.default_int_handler
        on_sigint(signal.SIGINT, frame)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(exc: BaseException) -> str:
    return _one_line_text(str(exc))


def _one_line_text(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
