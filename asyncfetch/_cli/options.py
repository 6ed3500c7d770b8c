"""What the command line's subcommands share: option types, output flags, exit codes and
the formatting of sizes, rates and failures."""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

from .._config import check_chunk_size, parse_size
from .._errors import FetchError, InvalidRequest
from .._hub.registry import looks_like_name
from .._transport.netpolicy import parse_networks
from .._urls import check_url
from .._userinfo import redact

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout's reader left (`| head`)


_SHA256 = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


def sha256(text: str) -> str:
    """A SHA-256 as 64 hex digits, in lower case; upper case, spaces around it and a
    ``sha256:`` prefix are accepted (argparse type)."""
    found = _SHA256.fullmatch(text.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA-256 (64 hex digits)")
    return found.group(1)


def url(text: str) -> str:
    """An absolute http(s) URL (argparse type)."""
    try:
        return check_url(text)
    except FetchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def url_or_name(text: str) -> str:
    """An absolute http(s) URL, or a name to look up in the model registry (argparse type)."""
    return text if looks_like_name(text) else url(text)


def size(text: str) -> int:
    """A byte count such as ``8M`` or ``16MiB`` (argparse type)."""
    try:
        return parse_size(text)
    except FetchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def chunk_size(text: str) -> int | None:
    """A chunk size, at least the engine's minimum (argparse type)."""
    try:
        return check_chunk_size(text)
    except FetchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def whole_number(text: str, minimum: int) -> int:
    """``text`` as a whole number of at least ``minimum``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1 (argparse type)."""
    return whole_number(text, 1)


def retries(text: str) -> int:
    """A number of retries, 0 or more (argparse type)."""
    return whole_number(text, 0)


def header(text: str) -> tuple[str, str]:
    """``'Name: value'`` as (name, value), as curl's ``-H`` takes it (argparse type)."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or name != name.strip() or " " in name:
        raise argparse.ArgumentTypeError(
            "a header is 'Name: value', e.g. 'Authorization: Bearer ...'"
        )
    return name, value.strip()


def headers_by_url(pairs: list[list[str]]) -> dict[str, dict[str, str]]:
    """``--mirror-header URL 'Name: value'`` pairs as ``{URL: {name: value}}``."""
    by_url: dict[str, dict[str, str]] = {}
    for url, text in pairs:
        try:
            name, value = header(text)
        except argparse.ArgumentTypeError as exc:
            raise InvalidRequest(f"--mirror-header {url}: {exc}") from None
        by_url.setdefault(url, {})[name] = value
    return by_url


def seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def count(text: str) -> int:
    """A whole number, 0 or more (argparse type)."""
    return whole_number(text, 0)


def speed(text: str) -> int:
    """Bytes per second such as ``1K`` or ``512``; ``0`` for none (argparse type)."""
    return 0 if text.strip() == "0" else size(text)


def network(text: str) -> str:
    """A CIDR such as ``10.0.0.0/8`` or an address (argparse type)."""
    try:
        parse_networks([text])
    except FetchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def port(text: str) -> int:
    """A TCP port, 0-65535 (argparse type)."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def add_tls_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--cacert FILE`` / ``--insecure`` (the TLS trust, see :mod:`.._transport.tls`)."""
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--cacert", type=Path, metavar="FILE",
        help="trust the CA certificates in FILE (PEM) instead of the system store and of "
        "REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, SSL_CERT_FILE",
    )  # fmt: skip
    trust.add_argument(
        "--insecure", action="store_true", help="do not check TLS certificates (unsafe; warns)"
    )


INSECURE_WARNING = "warning: --insecure: certificates are not checked"


def warn_if_insecure(args: argparse.Namespace) -> None:
    """With ``--insecure``, say so on stderr (every run), in place of the library's warning."""
    if getattr(args, "insecure", False):
        import warnings

        from .._errors import InsecureWarning

        print(INSECURE_WARNING, file=sys.stderr, flush=True)
        warnings.simplefilter("ignore", InsecureWarning)


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--progress`` / ``--no-progress`` and ``--json`` to ``parser``."""
    bars = parser.add_mutually_exclusive_group()
    bars.add_argument("--no-progress", action="store_true", help="never draw progress bars")
    bars.add_argument("--progress", action="store_true", help="draw bars even off a terminal")
    parser.add_argument("--json", action="store_true", help="print one JSON object per result")


def wants_bars(args: argparse.Namespace) -> bool:
    """Bars on stderr: asked for with --progress, or on a terminal unless --no-progress or
    --json (whose stdout a script reads) turn them off."""
    if args.no_progress or args.json and not args.progress:
        return False
    return bool(args.progress or sys.stderr.isatty())


def rate(speed: float) -> str:
    """Bytes per second in the largest decimal unit that keeps it at least 1 (kB/s, MB/s, ...)."""
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if speed >= scale:
            return f"{speed / scale:.1f} {unit}"
    return f"{speed:.0f} B/s"


def byte_size(size: float) -> str:
    """``size`` bytes in the largest binary unit up to GiB (``1.5 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def failure_json(url: str, path: Path | None, error: BaseException | None) -> dict[str, Any]:
    """What ``--json`` prints for a file that failed (batch and get alike)."""
    return {
        "url": redact(url),
        "path": str(path) if path else None,
        "status": "failed",
        "error": error_text(error),
        "error_type": type(error).__name__,
    }


def error_text(error: BaseException | None) -> str:
    """``error``'s message on one line, or its type's name when it has none."""
    return " ".join(str(error).split()) or type(error).__name__


def one_line_text(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())
