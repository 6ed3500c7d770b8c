"""``asyncfetch cache path|ls|verify|prune``: the download cache from the command line.

Built on the public :mod:`asyncfetch.cache` API only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .. import cache
from .._config import parse_duration, parse_size
from .._errors import FetchError, InvalidRequest

EXIT_OK = 0
EXIT_PROBLEM = 1


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``cache`` subcommand to the top-level parser's ``commands``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, help="the cache directory (default: torch.hub's)")
    common.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser = commands.add_parser("cache", help="list, verify and prune the download cache")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "path", parents=[common], help="print the cache directory"
    ).set_defaults(handler=_path)  # fmt: skip
    actions.add_parser(
        "ls", parents=[common], help="list cached files: size, age, last use, state"
    ).set_defaults(handler=_ls)  # fmt: skip
    verify = actions.add_parser("verify", parents=[common], help="re-hash and report corruption")
    verify.add_argument("names", nargs="*", metavar="NAME", help="file names (default: all)")
    verify.set_defaults(handler=_verify)
    prune = actions.add_parser("prune", parents=[common], help="delete files to free space")
    prune.add_argument("--keep-latest", type=_count, metavar="N", help="keep the N latest used")
    prune.add_argument("--max-size", type=_size, metavar="SIZE", help="shrink to SIZE (e.g. 50G)")
    prune.add_argument(
        "--older-than", type=_duration, metavar="DURATION", help="unused this long (e.g. 30d)"
    )
    prune.add_argument("--partials", action="store_true", help="abandoned partial downloads")
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    prune.set_defaults(handler=_prune, usage=prune)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except FetchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except FetchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _path(args: argparse.Namespace) -> int:
    where = cache.path(args.dir)
    print(json.dumps({"path": str(where)}) if args.json else where)
    return EXIT_OK


def _check_dir(directory: Path | None) -> None:
    """A ``--dir`` given must be a directory: a typo must not read as an empty cache."""
    if directory is not None and not directory.expanduser().exists():
        raise InvalidRequest(
            f"{directory}: no such cache directory; check --dir (without it, the cache is "
            f"{cache.path(None)})"
        )


def _ls(args: argparse.Namespace) -> int:
    _check_dir(args.dir)
    entries = cache.ls(args.dir)
    if args.json:
        for entry in entries:
            print(json.dumps(_entry_json(entry)))
        return EXIT_OK
    if not entries:
        print(f"{cache.path(args.dir)}: empty")
        return EXIT_OK
    print(f"{'STATE':<10} {'CHECKED':<7} {'SIZE':>10} {'AGE':>6} {'USED':>6}  NAME")
    now = time.time()
    for e in entries:
        size = _human(e.size) + (f"/{_human(e.total)}" if e.state == "partial" and e.total else "")
        name = e.name + (" (downloading)" if e.in_use else "")
        age, used = _ago(now - e.modified), _ago(now - e.last_used)
        checked = e.checked or "-"
        print(f"{e.state:<10} {checked:<7} {size:>10} {age:>6} {used:>6}  {name}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    _check_dir(args.dir)
    results = cache.verify(args.names, args.dir)
    for result in results:
        if args.json:
            print(json.dumps({**vars(result), "path": str(result.path)}))
        elif result.status == "corrupt":
            print(f"CORRUPT   {result.name}: SHA-256 {result.sha256}, expected {result.expected}; "
                  "the next fetch downloads it again")  # fmt: skip
        elif result.status == "missing":
            where = cache.path(args.dir)
            print(f"MISSING   {result.name}: not a file in the cache {where} (see cache ls)")
        elif result.status == "ok":
            against = _AGAINST[result.checked]
            print(f"{result.status:<9} {result.name} {result.sha256} (checked against {against})")
        else:
            note = " (nothing to compare with; recorded now)"
            print(f"{result.status:<9} {result.name} {result.sha256}{note}")
    bad = any(r.status in ("corrupt", "missing") for r in results)
    return EXIT_PROBLEM if bad else EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    criteria = (args.keep_latest, args.max_size, args.older_than)
    if all(c is None for c in criteria) and not args.partials:
        args.usage.error(  # exits 2, as argparse does for any usage error
            "say what to prune: --keep-latest N, --max-size SIZE, --older-than DURATION or "
            "--partials"
        )
    _check_dir(args.dir)
    report = cache.prune(
        keep_latest=args.keep_latest,
        max_size=args.max_size,
        older_than=args.older_than,
        partials=args.partials,
        dry_run=args.dry_run,
        directory=args.dir,
    )
    verb = "would remove" if report.dry_run else "removed"
    for entry, action in [(e, verb) for e in report.removed] + [
        (e, "in use, kept") for e in report.kept_in_use
    ]:
        if args.json:
            print(json.dumps({**_entry_json(entry), "action": action}))
        else:
            print(f"{action}: {entry.path.name} ({_human(entry.size)})")
    if not args.json:
        count = len(report.removed)
        print(f"{verb} {count} file{'' if count == 1 else 's'}, {_human(report.freed)}")
    return EXIT_OK


_AGAINST = {
    "caller": "the SHA-256 given when downloaded",
    "server": "the SHA-256 the server announced",
    None: "nothing: the same bytes as when downloaded, which no digest vouched for",
}


def _entry_json(entry: cache.CacheEntry) -> dict[str, Any]:
    return {**vars(entry), "path": str(entry.path)}


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TiB"


def _ago(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"
