"""A download request: one file's URLs, destination and digest, with the caller's Options."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from .._errors import InvalidRequest
from .._expectation import NOTHING, Expectation, Nothing
from .._models import ProgressCallback
from .._options import Options
from .._urls import check_url
from .progress import ProgressBar

log = logging.getLogger("asyncfetch")


@dataclass(frozen=True)
class Request:
    """One file to download: its sources, its destination, what its bytes must be, and how
    (the caller's Options, settled for this file: see :func:`make_request`)."""

    urls: tuple[str, ...]
    dest: Path
    expected: Expectation = NOTHING
    options: Options = field(default_factory=Options)

    @property
    def url(self) -> str:
        """The primary URL."""
        return self.urls[0]

    @property
    def sha256(self) -> str | None:
        """The full SHA-256 the file must have, when one is expected."""
        return self.expected.digest

    @property
    def progress(self) -> ProgressCallback | None:
        """The progress callback (a bar, where the caller asked for one)."""
        return self.options.callback


def make_request(
    url: str,
    dest: str | PathLike[str],
    options: Options,
    *,
    mirrors: Iterable[str] = (),
    expected: Expectation = NOTHING,
) -> Request:
    """Check one file's URLs and destination; raises InvalidRequest on bad input.

    ``options`` are settled for this file: ``progress=True`` becomes a bar named after it,
    and hashing is on when anything is ``expected`` of the bytes.
    """
    urls = (check_url(url), *_usable_mirrors(url, mirror_urls(mirrors)))
    target = Path(dest).expanduser().absolute()
    settled = dataclasses.replace(
        options,
        progress=ProgressBar(target.name) if options.progress is True else options.progress,
        hashing=options.hashing or not isinstance(expected, Nothing),
    )
    return Request(urls=urls, dest=target, expected=expected, options=settled)


def mirror_urls(mirrors: Iterable[str] | str) -> tuple[str, ...]:
    """``mirrors`` as a tuple: a single string is one mirror (not a mirror per character)."""
    return (mirrors,) if isinstance(mirrors, str) else tuple(mirrors)


def _usable_mirrors(url: str, mirrors: Iterable[str]) -> list[str]:
    """The mirrors worth trying, duplicates merged; a malformed one is skipped with a warning."""
    usable: list[str] = []
    for mirror in mirrors:
        try:
            check_url(mirror)
        except InvalidRequest as exc:
            log.warning("skipping mirror: %s", exc)
            continue
        if mirror != url and mirror not in usable:
            usable.append(mirror)
    return usable
