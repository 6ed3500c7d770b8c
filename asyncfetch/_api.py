"""The sync entry points over the async engine."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from os import PathLike

from ._config import RetryPolicy, Timeouts
from ._engine.fetch import run
from ._engine.request import make_request
from ._expectation import expect_sha256
from ._models import FetchResult, ProgressCallback
from ._options import make_options
from ._sync import run_sync


def download(
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
    mirror_headers: Mapping[str, Mapping[str, str]] | None = None,
    progress: ProgressCallback | bool | None = None,
    hash: bool = True,
    offline: bool | None = None,
    verify: bool = False,
    cacert: str | PathLike[str] | None = None,
    insecure: bool = False,
) -> FetchResult:
    """Download ``url`` to ``dest``: the blocking form of :func:`asyncfetch.fetch`.

    Works from plain scripts and from inside a running event loop (it then runs on a helper
    thread). Same arguments, result and errors as :func:`asyncfetch.fetch`.
    """
    options = make_options(
        connections=connections, chunk_size=chunk_size, retry=retry, timeout=timeout,
        headers=headers, mirror_headers=mirror_headers, progress=progress, hash=hash,
        offline=offline, verify=verify, cacert=cacert, insecure=insecure, url=url,
    )  # fmt: skip
    expected = expect_sha256(sha256, url)
    return run_sync(run(make_request(url, dest, options, mirrors=mirrors, expected=expected)))
