"""How to download: one immutable :class:`Options`, built at the public edge and passed down.

Every entry point (``fetch``, ``download``, ``fetch_many``, ``rank_mirrors``, the torch.hub
drop-ins, the command line) keeps its keyword arguments, turns them into one ``Options`` with
:func:`make_options` (which checks them and raises InvalidRequest), and hands that object
down. No private function takes the option keywords; what is about one file (its URLs, its
destination, the digest it must have) travels beside the options, in the engine's Request.

Adding an option:

1. add a field to :class:`Options` (a default that keeps today's behaviour, a comment if the
   name does not say it all) and a keyword to :func:`make_options` that checks the value and
   sets the field;
2. add the keyword to the public entry points that expose it, each passing it to its
   ``make_options(...)`` call (the CLI: an argparse option, passed the same way);
3. read ``options.<name>`` where it is used (the Transport for the network side, the
   engine's Download for the download side, the cache's verdict for what is a hit).

Nothing in between changes: the options object travels whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import cast

from ._config import (
    DEFAULT_CONNECTIONS,
    RetryPolicy,
    Timeouts,
    TLSTrust,
    check_chunk_size,
    check_connections,
    env_settings,
)
from ._errors import InvalidRequest
from ._models import ProgressCallback
from ._userinfo import origin

__all__ = ["Options", "check_mirror_headers", "check_progress", "make_options"]


@dataclass(frozen=True, kw_only=True)
class Options:
    """How to download, checked: the caller's settings as one value (see the module docstring).

    Attributes:
        connections: parallel connections in all.
        chunk_size: bytes per ranged request (None: small first, growing).
        retry: how often and how patiently a failed request is tried again.
        timeouts: connect and read-idle timeouts.
        headers: extra request headers (e.g. Authorization); ``Authorization`` and ``Cookie``
            go only to the origin of the URL asked for, never to a mirror's or a redirect's.
        mirror_headers: headers for the mirrors, by origin (``scheme://host:port``): each
            mirror gets those of its origin, and only it.
        progress: a callback for ProgressEvents, ``True`` for a tqdm bar named after the file
            (drawn by whoever knows the file's name), or None.
        hashing: compute the SHA-256 even when no digest is expected.
        offline: use only what is on disk, never the network.
        verify: re-hash an existing file even when its marker vouches for it; a file no marker
            vouches for is downloaded again.
        trust_unvouched: whether an existing file no asyncfetch marker vouches for may be a
            hit (as torch.hub's cache file); None: only in torch.hub's cache directory.
        tls: which TLS certificates to trust (``cacert``, ``insecure``; with the
            environment, see :mod:`asyncfetch._transport.tls`).
    """

    connections: int = DEFAULT_CONNECTIONS
    chunk_size: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    headers: Mapping[str, str] | None = None
    mirror_headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    progress: ProgressCallback | bool | None = None
    hashing: bool = True
    offline: bool = False
    verify: bool = False
    trust_unvouched: bool | None = None
    tls: TLSTrust = field(default_factory=TLSTrust)

    @property
    def callback(self) -> ProgressCallback | None:
        """The progress callback, None when there is none or only a bar is asked for."""
        return None if isinstance(self.progress, bool) else self.progress


def make_options(
    *,
    connections: int = DEFAULT_CONNECTIONS,
    chunk_size: int | str | None = None,
    retry: RetryPolicy | int | None = None,
    timeout: Timeouts | float | None = None,
    headers: Mapping[str, str] | None = None,
    mirror_headers: Mapping[str, Mapping[str, str]] | None = None,
    progress: ProgressCallback | bool | None = None,
    hash: bool = True,
    offline: bool | None = None,
    verify: bool = False,
    trust_unvouched: bool | None = None,
    cacert: str | PathLike[str] | None = None,
    insecure: bool = False,
    url: str | None = None,
) -> Options:
    """Check the public keyword arguments and bundle them into an Options.

    ``offline=None`` means: as ``ASYNCFETCH_OFFLINE`` says. ``url``, when the options are for
    one URL, is named in the errors.

    Raises:
        InvalidRequest: a value that cannot work.
    """
    try:
        return Options(
            connections=check_connections(connections),
            chunk_size=check_chunk_size(chunk_size),
            retry=RetryPolicy.coerce(retry),
            timeouts=Timeouts.coerce(timeout),
            headers=headers,
            mirror_headers=check_mirror_headers(mirror_headers),
            progress=True if progress is True else check_progress(progress),
            hashing=hash,
            offline=env_settings().offline if offline is None else offline,
            verify=verify,
            trust_unvouched=trust_unvouched,
            tls=TLSTrust.coerce(cacert, insecure),
        )
    except InvalidRequest as exc:
        if url is None or exc.url is not None:
            raise
        raise InvalidRequest(str(exc), url=url) from None


def check_mirror_headers(
    mirror_headers: Mapping[str, Mapping[str, str]] | None,
) -> dict[str, dict[str, str]]:
    """``{mirror URL: {name: value}}`` keyed by each URL's origin (headers given for two URLs
    of one origin merge); InvalidRequest for a key that is no http(s) URL or a value that is
    no mapping of text to text."""
    by_origin: dict[str, dict[str, str]] = {}
    for url, headers in (mirror_headers or {}).items():
        where = origin(url) if isinstance(url, str) else None
        if where is None or not where.startswith(("http://", "https://")):
            raise InvalidRequest(
                f"mirror_headers: {url!r} is not a mirror's URL; give "
                "{'https://mirror.example.org': {'Authorization': 'Bearer ...'}}"
            )
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise InvalidRequest(
                f"mirror_headers[{url!r}] must map header names to values (text), "
                f"got a {type(headers).__name__}"
            )
        by_origin.setdefault(where, {}).update(headers)
    return by_origin


def check_progress(progress: object) -> ProgressCallback | None:
    """The caller's progress function, or None for ``None`` and ``False``; InvalidRequest for
    anything else (callers turn ``True`` into a bar of their own before asking)."""
    if progress is None or progress is False:
        return None
    if not callable(progress):
        raise InvalidRequest(
            f"progress must be True, False or a function taking a ProgressEvent, got {progress!r}"
        )
    return cast(ProgressCallback, progress)
