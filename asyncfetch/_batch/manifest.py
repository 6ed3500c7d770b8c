"""Batch manifests: TOML, JSON lines, or a plain list of URLs → Sources.

TOML (``.toml``) has one ``[[file]]`` table per file::

    [[file]]
    url = "https://example.org/resnet50.pth"
    mirrors = ["https://mirror.example.org/resnet50.pth"]
    sha256 = "0f1e..."            # optional
    dest = "models/resnet50.pth"  # optional; or name = "r50.pth"

JSON lines (``.jsonl``, ``.ndjson``, ``.json``) have one object with the same keys per line (a
bare JSON string is a URL). A plain list has one URL per line. In JSON lines and plain lists,
blank lines and lines starting with ``#`` are skipped. Other file names are recognised by
their first line: ``{`` or ``"`` means JSON lines, ``[`` or ``key =`` TOML, else URLs.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from .._errors import InvalidRequest
from .._expectation import is_sha256
from .._urls import check_url
from .many import Source

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tomli backport on Python 3.10
    import tomli as tomllib

Format = Literal["toml", "jsonl", "urls"]

_SUFFIXES: dict[str, Format] = {
    ".toml": "toml",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_TOML_KEY = re.compile(r"[A-Za-z0-9_.\"' -]+=")
_TABLES = ("file", "files")


def read_manifest(path: str | Path) -> list[Source]:
    """The sources a manifest file lists (blocking: call it before the event loop or in a thread).

    Raises:
        InvalidRequest: the file cannot be read or an entry is malformed; the message names the
            file and the line (or the entry).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read manifest {path}: {exc}") from None
    return parse_manifest(text, name=str(path), kind=_SUFFIXES.get(path.suffix.lower()))


def parse_manifest(
    text: str, *, name: str = "<manifest>", kind: Format | None = None
) -> list[Source]:
    """The sources in a manifest's text; ``kind`` None means guess from the first line."""
    kind = kind or sniff(text)
    if kind == "toml":
        sources = list(_parse_toml(text, name))
    elif kind == "jsonl":
        sources = list(_parse_jsonl(text, name))
    else:
        sources = list(_parse_urls(text, name))
    if not sources:
        raise InvalidRequest(f"manifest {name} lists no files")
    return sources


def sniff(text: str) -> Format:
    """Guess a manifest's format from its first line that is not blank or a comment."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("{", '"')):
            return "jsonl"
        if line.startswith("[") or (_TOML_KEY.match(line) and "://" not in line.split("=")[0]):
            return "toml"
        return "urls"
    return "urls"


def _parse_toml(text: str, name: str) -> Iterator[Source]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"manifest {name}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_TABLES))
    if unknown:
        raise InvalidRequest(
            f"manifest {name}: unknown top-level key(s) {unknown}; list files as [[file]] tables"
        )
    entries = [entry for table in _TABLES for entry in data.get(table, [])]
    for number, entry in enumerate(entries, 1):
        yield _source(entry, f"{name}: file #{number}")


def _parse_jsonl(text: str, name: str) -> Iterator[Source]:
    for number, line in _lines(text):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{name}:{number}: not valid JSON: {exc}") from None
        yield _source(entry, f"{name}:{number}")


def _parse_urls(text: str, name: str) -> Iterator[Source]:
    for number, line in _lines(text):
        if len(line.split()) != 1:
            raise InvalidRequest(
                f"{name}:{number}: expected one URL per line, got {line!r} (for mirrors, a "
                "digest or a dest, use a TOML or JSON-lines manifest)"
            )
        yield _source(line, f"{name}:{number}")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def _source(entry: Any, where: str) -> Source:
    """One entry as a checked Source; errors name ``where`` it is."""
    if not isinstance(entry, (str, dict)):
        raise InvalidRequest(f"{where}: expected a URL or a table/object, got {entry!r}")
    try:
        source = Source.coerce(entry)
        for url in (source.url, *source.mirrors):
            check_url(url)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc}", url=exc.url) from None
    if source.sha256 is not None and not is_sha256(source.sha256):
        raise InvalidRequest(
            f"{where}: sha256 must be 64 hex digits, got {source.sha256!r}", url=source.url
        )
    return source
