"""The command line: ``asyncfetch get|mirrors|...`` (``batch``, ``cache``, ``serve`` and
``submit``/``jobs`` have modules of their own). It turns flags into the library's Options once
per command and calls the engine or the hub side (registry names) as the library's own entry
points do."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from .._cache.lookup import cached_path, checkpoints_dir, ensure_dir
from .._config import RetryPolicy, Timeouts
from .._engine.download import RERUN_STARTS_OVER
from .._engine.fetch import run
from .._engine.progress import BarSafeHandler, ProgressBar
from .._engine.rank import DEFAULT_MAX_SECONDS, MirrorReport, rank_mirrors
from .._engine.request import make_request
from .._errors import FetchError
from .._expectation import expect_sha256
from .._hub import files as _hubfile
from .._hub import registry as _registry
from .._models import FetchResult, ProgressCallback, ProgressEvent
from .._options import Options, make_options
from .._sync import run_sync
from .._version import VERSION_LINE
from . import batch as _cli_batch
from . import cache as _cli_cache
from . import options, stdout
from . import serve as _cli_serve
from . import service as _cli_service
from .options import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    one_line_text,
)

Handler = Callable[[argparse.Namespace], int]
RESUME_NOTE = "run the same command again to resume"


def _add_get(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    get = commands.add_parser("get", help="download one file, verified")
    get.add_argument(
        "url", type=options.url_or_name, help="the file's URL, or a name in the model registry"
    )
    get.add_argument(
        "--registry",
        type=Path,
        metavar="FILE",
        help="TOML file of model names -> URLs (else $ASYNCFETCH_REGISTRY, else "
        "~/.config/asyncfetch/registry.toml; see docs/torch-hub.md)",
    )
    where = get.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", type=Path, help="the output file path")
    where.add_argument("--dir", type=Path, help="directory to put the file in (name from URL)")
    get.add_argument(
        "--mirror", action="append", default=[], type=options.url, help="another URL of the file"
    )
    get.add_argument(
        "-H", "--header", action="append", default=[], type=options.header,
        help="'Name: value' for the URL's origin (Authorization and Cookie go nowhere else)",
    )  # fmt: skip
    get.add_argument(
        "--mirror-header", nargs=2, action="append", default=[], metavar=("MIRROR", "HEADER"),
        help="'Name: value' for every request to MIRROR's origin (scheme, host, port) only",
    )  # fmt: skip
    get.add_argument("--sha256", type=options.sha256, help="expected SHA-256 (64 hex digits)")
    get.add_argument("--connections", type=options.positive_int, default=16, help="default: 16")
    get.add_argument("--chunk-size", type=options.chunk_size, help="bytes per request, e.g. 8M")
    get.add_argument("--retries", type=options.retries, help="retries per stuck range (default 4)")
    get.add_argument(
        "--timeout", type=options.seconds, help="connect and read-idle timeout, seconds"
    )
    get.add_argument(
        "--speed-limit", type=options.speed, metavar="BYTES",
        help="a connection receiving less per second over --speed-time is cut and retried "
        "from the byte it reached, as curl's (e.g. 10K; default 100; 0: off)",
    )  # fmt: skip
    get.add_argument("--speed-time", type=options.seconds, metavar="SECONDS", help="default: 60")
    get.add_argument("--no-hash", action="store_true", help="skip SHA-256 (no --sha256 only)")
    get.add_argument("--offline", action="store_true", help="use the cache only, no network")
    get.add_argument("--verify", action="store_true", help="re-hash a cached file, never trust")
    options.add_tls_flags(get)
    options.add_output_flags(get)
    get.set_defaults(handler=_get, resumable=True)


def _get(args: argparse.Namespace) -> int:
    dest: Path | None = args.output
    try:
        if _registry.looks_like_name(args.url):
            return _get_name(args)
        if dest is None:  # the cache, as torch.hub's: created when missing
            dest = cached_path(args.url, model_dir=checkpoints_dir(args.dir))
            ensure_dir(dest.parent)
        return _get_url(args, dest)
    except stdout.Unwritable:
        raise  # the download stands; only its report could not be printed
    except FetchError as exc:
        if args.json:  # the object batch --json prints for a failed file; main() says the rest
            path = dest.expanduser().absolute() if dest is not None else None
            print(json.dumps(options.failure_json(args.url, path, exc)), flush=True)
        raise


def _get_url(args: argparse.Namespace, dest: Path) -> int:
    progress = _progress_for(args, dest.name)
    watch = _StopWatch(progress)
    try:
        fetch_options = _fetch_options(args, args.url, progress=watch)
        expected = expect_sha256(args.sha256, args.url)
        request = make_request(
            args.url, dest, fetch_options, mirrors=args.mirror, expected=expected
        )
        result = run_sync(run(request))
    except KeyboardInterrupt:
        args.stop_note = watch.stop_note
        raise
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
    fetch_options = _fetch_options(
        args, source.url, progress=_progress_for(args, dest.name) is not None
    )
    result = _hubfile.get_file(source, dest, prefix, fetch_options)
    _print_result(result, args.json, source.url)
    return EXIT_OK


def _fetch_options(
    args: argparse.Namespace, url: str, *, progress: ProgressCallback | bool | None
) -> Options:
    """``get``'s options, for a URL and for a registry name alike: the one place the command
    line turns its flags into the library's Options."""
    return make_options(
        connections=args.connections,
        chunk_size=args.chunk_size,
        retry=RetryPolicy.coerce(args.retries),
        timeout=_timeouts(args),
        headers=dict(args.header),
        mirror_headers=options.headers_by_url(args.mirror_header),
        progress=progress,
        hash=not args.no_hash,
        offline=True if args.offline else None,
        verify=args.verify,
        cacert=args.cacert,
        insecure=args.insecure,
        url=url,
    )


class _StopWatch:
    """A progress callback that passes events on and keeps what a stop means for a rerun."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self._progress = progress
        self.stop_note = RESUME_NOTE

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "failed" and event.message.endswith(RERUN_STARTS_OVER):
            self.stop_note = event.message.removeprefix("stopped; ")
        if self._progress is not None:
            self._progress(event)


def _timeouts(args: argparse.Namespace) -> Timeouts:
    """``--timeout``, ``--speed-limit`` and ``--speed-time`` as one Timeouts."""
    timeouts = Timeouts.coerce(args.timeout)
    if args.speed_limit is not None:
        timeouts = dataclasses.replace(timeouts, low_speed=float(args.speed_limit))
    if args.speed_time is not None:
        timeouts = dataclasses.replace(timeouts, low_speed_time=args.speed_time)
    return timeouts


def _progress_for(args: argparse.Namespace, name: str) -> ProgressCallback | None:
    return ProgressBar(name) if options.wants_bars(args) else None


def _print_result(result: FetchResult, as_json: bool, url: str | None = None) -> None:
    if as_json:
        url = url or next(iter(result.bytes_by_mirror), None)
        print(json.dumps(result.as_json(url)), flush=True)
        return
    digest = f" sha256={result.sha256}" if result.sha256 else ""
    if result.cached:
        print(f"{result.path} {result.size} bytes (cached){digest}")
        return
    speed = f" ({options.rate(result.speed)})" if result.speed > 0 else ""
    print(f"{result.path} {result.size} bytes in {result.elapsed:.2f}s{speed}{digest}")


def _add_mirrors(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mirrors = commands.add_parser("mirrors", help="rank mirrors of one file by measured speed")
    mirrors.add_argument(
        "urls", nargs="+", metavar="URL", type=options.url, help="URLs of the same file"
    )
    mirrors.add_argument("--sample", type=options.size, default=8 << 20, help="bytes to time (8M)")
    mirrors.add_argument("--connections", type=options.positive_int, default=4, help="default: 4")
    mirrors.add_argument(
        "--timeout", type=options.seconds, help="connect and read-idle timeout, seconds"
    )
    mirrors.add_argument(
        "--max-time", type=options.seconds, default=DEFAULT_MAX_SECONDS,
        help="seconds to read each URL at most while its rate settles (10)",
    )  # fmt: skip
    mirrors.add_argument("--json", action="store_true", help="print one JSON object per URL")
    options.add_tls_flags(mirrors)
    mirrors.set_defaults(handler=_mirrors)


def _mirrors(args: argparse.Namespace) -> int:
    reports = run_sync(
        rank_mirrors(
            args.urls,
            sample=args.sample,
            connections=args.connections,
            timeout=Timeouts.coerce(args.timeout),
            cacert=args.cacert,
            insecure=args.insecure,
            max_seconds=args.max_time,
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
        print(f"asyncfetch: error: mirrors disagree: {one_line_text(listing)}; use only the "
              "URLs that serve the file you expect", file=sys.stderr)  # fmt: skip
    failed = [r for r in reports if r.error]
    if failed:  # a dead mirror fails the command too, so CI notices it
        listing = "; ".join(_naming(r.url, r.error) for r in failed if r.error)
        print(f"asyncfetch: error: {len(failed)} of {len(reports)} mirrors failed: "
              f"{one_line_text(listing)}; fix or drop them", file=sys.stderr)  # fmt: skip
    return EXIT_FAILED if differ or failed or not any(r.ok for r in reports) else EXIT_OK


def _naming(url: str, error: str) -> str:
    """``error``, beginning with the URL it is about (most errors already do)."""
    return error if error.startswith(url) else f"{url}: {error}"


def _print_mirror_table(reports: list[MirrorReport]) -> None:
    print(f"{'#':>2}  {'MB/s':>8}  {'burst':>8}  {'TTFB ms':>8}  {'ranges':>6}  {'size':>12}  "
          f"{'status':<7}  url")  # fmt: skip
    for rank, r in enumerate(reports, 1):
        speed = f"{r.speed / 1e6:8.1f}" if r.speed else f"{'-':>8}"
        burst = f"{r.burst / 1e6:8.1f}" if r.burst else f"{'-':>8}"
        ttfb = f"{r.ttfb * 1000:8.1f}" if r.ttfb is not None else f"{'-':>8}"
        size = f"{r.size:>12}" if r.size is not None else f"{'?':>12}"
        status = "ok" if r.ok else ("error" if r.error else "differs")
        ranges = "yes" if r.accepts_ranges else "no"
        print(f"{rank:>2}  {speed}  {burst}  {ttfb}  {ranges:>6}  {size}  "
              f"{status:<7}  {r.url}")  # fmt: skip
        if r.error or r.disagreement:
            print(f"    {one_line_text(r.error or r.disagreement or '')}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="asyncfetch",
        description="Fast, verified, resumable downloads of large files (model checkpoints).",
    )
    parser.add_argument("--version", action="version", version=VERSION_LINE)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_get(commands)
    _cli_batch.add_parser(commands)
    _add_mirrors(commands)
    _cli_serve.add_parser(commands)
    _cli_service.add_parsers(commands)
    _cli_cache.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asyncfetch`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    if handler is not _cli_serve.run:  # the service logs JSON lines of its own
        _log_through_bars()
    terminated: list[int] = []
    sigterm = _sigterm_as_sigint(terminated) if getattr(args, "resumable", False) else None
    options.warn_if_insecure(args)
    try:
        with sigterm or contextlib.nullcontext(), stdout.guarded():
            status = handler(args)
            sys.stdout.flush()  # here, where a reader that left can still be answered
            return status
    except BrokenPipeError:
        stdout.drop()
        return EXIT_BROKEN_PIPE
    except FetchError as exc:
        print(f"asyncfetch: error: {_one_line(exc)}", file=sys.stderr)
        if isinstance(exc, stdout.Unwritable):
            stdout.drop()
        return EXIT_FAILED
    except KeyboardInterrupt:
        stopped = "terminated" if terminated else "interrupted"
        note = getattr(args, "stop_note", RESUME_NOTE)
        print(f"asyncfetch: {stopped}; {note}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _log_through_bars() -> None:
    """The library's warnings (a retry and its wait, a dropped mirror) on stderr, one line
    each, never inside a progress bar's line."""
    logger = logging.getLogger("asyncfetch")
    if not any(isinstance(h, BarSafeHandler) for h in logger.handlers):
        logger.addHandler(BarSafeHandler())


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
    return one_line_text(str(exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
