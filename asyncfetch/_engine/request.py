"""A download request: the caller's arguments, checked and bundled."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import cast

from .._cache.lookup import in_hub_cache
from .._config import RetryPolicy, Timeouts, check_chunk_size, check_connections, env_settings
from .._errors import (
    InvalidRequest,
)
from .._models import ProgressCallback
from .._transport.client import check_url
from .progress import ProgressBar

log = logging.getLogger("asyncfetch")

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Request:
    """Everything one download needs, validated."""

    urls: tuple[str, ...]
    dest: Path
    sha256: str | None = None
    connections: int = 16
    chunk_size: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    headers: Mapping[str, str] | None = None
    progress: ProgressCallback | None = None
    hashing: bool = True
    offline: bool = False
    verify: bool = False
    trust_unmarked: bool = True

    @property
    def url(self) -> str:
        """The primary URL."""
        return self.urls[0]


def make_request(
    url: str,
    dest: str | PathLike[str],
    *,
    mirrors: Iterable[str] = (),
    sha256: str | None = None,
    connections: int = 16,
    chunk_size: int | str | None = None,
    retry: RetryPolicy | int | None = None,
    timeout: Timeouts | float | None = None,
    headers: Mapping[str, str] | None = None,
    progress: ProgressCallback | bool | None = None,
    hash: bool = True,
    offline: bool | None = None,
    verify: bool = False,
    trust_unmarked: bool | None = None,
) -> Request:
    """Check the caller's arguments and bundle them; raises InvalidRequest on bad input.

    ``offline=None`` means: as ``ASYNCFETCH_OFFLINE`` says. ``trust_unmarked=False``: without
    ``sha256``, an existing ``dest`` is a hit only if asyncfetch's marker vouches for it (a
    file without one, or changed since, is downloaded again, as torch.hub's
    ``download_url_to_file`` always does); ``True``: a file without one may be a hit as
    torch.hub's (see :func:`asyncfetch._cache.lookup.find_remote`); ``None``: ``True`` for a
    ``dest`` in torch.hub's cache directory only.
    """
    urls = (check_url(url), *_usable_mirrors(url, mirror_urls(mirrors)))
    target = Path(dest).expanduser().absolute()
    sha256 = check_sha256(sha256, url)
    try:
        chunk_size = check_chunk_size(chunk_size)
    except InvalidRequest as exc:
        raise InvalidRequest(str(exc), url=url) from None
    return Request(
        urls=urls,
        dest=target,
        sha256=sha256,
        connections=check_connections(connections),
        chunk_size=chunk_size,
        retry=RetryPolicy.coerce(retry),
        timeouts=Timeouts.coerce(timeout),
        headers=headers,
        progress=ProgressBar(target.name) if progress is True else check_progress(progress, url),
        hashing=hash or sha256 is not None,
        offline=env_settings().offline if offline is None else offline,
        verify=verify,
        trust_unmarked=in_hub_cache(target) if trust_unmarked is None else trust_unmarked,
    )


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


def check_progress(progress: object, url: str = "") -> ProgressCallback | None:
    """The caller's progress function, or None for ``None`` and ``False``; InvalidRequest for
    anything else (callers turn ``True`` into a bar of their own before asking)."""
    if progress is None or progress is False:
        return None
    if not callable(progress):
        raise InvalidRequest(
            f"progress must be True, False or a function taking a ProgressEvent, got {progress!r}",
            url=url or None,
        )
    return cast(ProgressCallback, progress)


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
