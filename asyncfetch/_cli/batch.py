"""``asyncfetch batch MANIFEST``: every file a manifest lists, with a summary table or JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from .._batch.manifest import read_manifest
from .._batch.many import BatchItem, Source, fetch_many
from .._config import RetryPolicy, Timeouts
from .._engine.progress import BatchProgress
from .._sync import run_sync
from .._userinfo import redact
from . import options as options


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``batch`` subcommand to the top-level parser's ``commands``."""
    batch = commands.add_parser("batch", help="download every file a manifest lists")
    batch.add_argument("manifest", type=Path, help="TOML, JSON lines, or one URL per line")
    batch.add_argument(
        "--jobs", type=options.positive_int, help="files at once (default: --connections)"
    )
    batch.add_argument(
        "--connections",
        type=options.positive_int,
        default=16,
        help="requests in flight in all (16)",
    )
    batch.add_argument("--per-host", type=options.positive_int, help="requests in flight per host")
    batch.add_argument("--dir", type=Path, help="where files without a dest go (torch.hub cache)")
    batch.add_argument("--chunk-size", type=options.chunk_size, help="bytes per request, e.g. 8M")
    batch.add_argument(
        "--retries", type=options.retries, help="retries per stuck range (default 4)"
    )
    batch.add_argument(
        "--timeout", type=options.seconds, help="connect and read-idle timeout, seconds"
    )
    batch.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    options.add_tls_flags(batch)
    options.add_output_flags(batch)
    batch.set_defaults(handler=run, resumable=True)


def run(args: argparse.Namespace) -> int:
    """Download the manifest's files; print the table (or JSON) and one line per failure."""
    sources = read_manifest(args.manifest)
    progress = BatchProgress(len(sources)) if options.wants_bars(args) else None
    items: list[BatchItem] = []
    try:
        run_sync(_run_batch(args, sources, progress, items))
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        _report_interrupted(items, len(sources))
        raise
    finally:
        if progress is not None:
            progress.close()
    if not args.json:
        print(_summary(items), flush=True)
    failed = [item for item in items if not item.ok]
    _name_failures(failed)
    if args.fail_fast and failed and len(items) < len(sources):
        done = len(items) - len(failed)
        print(f"asyncfetch: stopped after the first failure with {done} of {len(sources)} files "
              "complete; run again to resume", file=sys.stderr)  # fmt: skip
    return options.EXIT_FAILED if failed else options.EXIT_OK


def _name_failures(failed: list[BatchItem]) -> None:
    """One ``asyncfetch: error:`` line on stderr per failed file, naming its URL."""
    for item in failed:
        message, url = options.error_text(item.error), redact(item.url)
        if url not in message:
            message = f"{url}: {message}"
        print(f"asyncfetch: error: {message}", file=sys.stderr)


def _report_interrupted(items: list[BatchItem], total: int) -> None:
    """After Ctrl-C (or SIGTERM): how many files are in place, failed (each named) and were
    interrupted or not started, on stderr; main() then says how to resume."""
    good = sum(item.ok for item in items)
    failed = [item for item in items if not item.ok]
    print(f"asyncfetch: {good} of {total} files ok, {len(failed)} failed, "
          f"{total - len(items)} interrupted or not started", file=sys.stderr)  # fmt: skip
    _name_failures(failed)


async def _run_batch(
    args: argparse.Namespace,
    sources: list[Source],
    progress: BatchProgress | None,
    items: list[BatchItem],
) -> None:
    """Download into ``items`` as files finish (so an interruption keeps what finished)."""
    batch = fetch_many(
        sources, max_files=args.jobs, connections=args.connections, per_host=args.per_host,
        dest_dir=args.dir, chunk_size=args.chunk_size, retry=RetryPolicy.coerce(args.retries),
        timeout=Timeouts.coerce(args.timeout), progress=progress, cacert=args.cacert,
        insecure=args.insecure,
    )  # fmt: skip
    async with contextlib.aclosing(batch):
        async for item in batch:
            items.append(item)
            if args.json:
                print(json.dumps(_item_json(item)), flush=True)
            if args.fail_fast and not item.ok:
                break


def _item_json(item: BatchItem) -> dict[str, Any]:
    if item.result is not None:
        return {**item.result.as_json(item.url), "status": "ok"}
    return options.failure_json(item.url, item.path, item.error)


def _summary(items: list[BatchItem]) -> str:
    """The table printed at the end of a batch: file, size, time, speed, status."""
    rows = [("file", "size", "time", "speed", "status")]
    for item in sorted(items, key=lambda i: i.index):
        name = str(item.path) if item.path else redact(item.url)
        result = item.result
        if result is None:
            rows.append((name, "-", "-", "-", "FAILED"))
            continue
        speed = options.rate(result.speed) if result.speed > 0 else "-"
        rows.append((name, options.byte_size(result.size), f"{result.elapsed:.2f}s", speed, "ok"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join([row[0].ljust(widths[0]), *(row[i].rjust(widths[i]) for i in (1, 2, 3)), row[4]])
        for row in rows
    ]
    good = sum(item.ok for item in items)
    total = sum(item.result.size for item in items if item.result is not None)
    lines.append(f"{good} of {len(items)} files ok, {options.byte_size(total)}")
    return "\n".join(lines)
