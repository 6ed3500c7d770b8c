"""A download request: one file's URLs, destination and digest, with the caller's Options."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from .._cache.lookup import in_hub_cache
from .._errors import InvalidRequest
from .._models import ProgressCallback
from .._options import Options
from .._transport.client import check_url
from .progress import ProgressBar

log = logging.getLogger("asyncfetch")

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Request:
    """One file to download: its sources, its destination, the digest it must have, and how
    (the caller's Options, settled for this file: see :func:`make_request`)."""

    urls: tuple[str, ...]
    dest: Path
    sha256: str | None = None
    options: Options = field(default_factory=Options)

    @property
    def url(self) -> str:
        """The primary URL."""
        return self.urls[0]

    @property
    def progress(self) -> ProgressCallback | None:
        """The progress callback (a bar, where the caller asked for one)."""
        return self.options.callback

    @property
    def trust_unvouched(self) -> bool:
        """Whether a file no marker vouches for may be a hit (settled by make_request)."""
        return bool(self.options.trust_unvouched)


def make_request(
    url: str,
    dest: str | PathLike[str],
    options: Options,
    *,
    mirrors: Iterable[str] = (),
    sha256: str | None = None,
) -> Request:
    """Check one file's URLs, destination and digest; raises InvalidRequest on bad input.

    ``options`` are settled for this file: ``progress=True`` becomes a bar named after it;
    hashing is on when a digest is expected; ``trust_unvouched=None`` becomes ``True`` for a
    ``dest`` in torch.hub's cache directory only (``False``: without ``sha256``, an existing
    ``dest`` is a hit only if asyncfetch's marker vouches for it, as torch.hub's
    ``download_url_to_file`` always downloads; ``True``: a file without one may be a hit as
    torch.hub's, see :func:`asyncfetch._cache.lookup.find_remote`).
    """
    urls = (check_url(url), *_usable_mirrors(url, mirror_urls(mirrors)))
    target = Path(dest).expanduser().absolute()
    sha256 = check_sha256(sha256, url)
    trust = options.trust_unvouched
    settled = dataclasses.replace(
        options,
        progress=ProgressBar(target.name) if options.progress is True else options.progress,
        hashing=options.hashing or sha256 is not None,
        trust_unvouched=in_hub_cache(target) if trust is None else trust,
    )
    return Request(urls=urls, dest=target, sha256=sha256, options=settled)


def mirror_urls(mirrors: Iterable[str] | str) -> tuple[str, ...]:
    """``mirrors`` as a tuple: a single string is one mirror (not a mirror per character)."""
    return (mirrors,) if isinstance(mirrors, str) else tuple(mirrors)


def check_sha256(sha256: object, url: str | None = None) -> str | None:
    """``sha256`` in lower case if it is a str of 64 hex digits (None stays None), else
    InvalidRequest."""
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InvalidRequest(
            f"sha256 must be a str of 64 hex digits, got {sha256!r}", url=url or None
        )
    return sha256.lower()


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
