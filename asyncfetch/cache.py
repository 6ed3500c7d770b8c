"""The download cache from Python: the same as ``asyncfetch cache path|ls|verify|prune``.

The cache is torch.hub's checkpoint directory (``$TORCH_HOME/hub/checkpoints``, or
``<dir>/checkpoints`` after ``torch.hub.set_dir(dir)`` in this process, as for the downloads), so
files either tool downloaded show up here. Every function takes ``directory`` to use another one.

>>> import asyncfetch
>>> where = asyncfetch.cache.path()
>>> for entry in asyncfetch.cache.ls():                                    # doctest: +SKIP
...     print(entry.name, entry.size, entry.state)
>>> bad = [r for r in asyncfetch.cache.verify() if r.status == "corrupt"]  # doctest: +SKIP
>>> asyncfetch.cache.prune(max_size="50G", partials=True)                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike

from . import hub as _hub  # noqa: F401  (it points the cache at torch.hub's set_dir)
from ._cache import directory as _cachedir
from ._cache.directory import CacheEntry, PruneReport, VerifyResult, ls, path, prune

__all__ = ["CacheEntry", "PruneReport", "VerifyResult", "ls", "path", "prune", "verify"]


def verify(
    names: Iterable[str] | str = (), directory: str | PathLike[str] | None = None
) -> list[VerifyResult]:
    """Re-hash cached files and compare them with their recorded digests, as ``asyncfetch
    cache verify`` does; a file found ``corrupt`` is downloaded again by its next fetch.

    Args:
        names: the files to check: one name, or several (default: every cached file).
        directory: the cache directory (default: torch.hub's).
    """
    return _cachedir.verify((names,) if isinstance(names, str) else names, directory)
