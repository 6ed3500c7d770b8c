"""The download cache from Python: the same as ``asyncfetch cache path|ls|verify|prune``.

The cache is torch.hub's checkpoint directory (``$TORCH_HOME/hub/checkpoints``), so files
either tool downloaded show up here. Every function takes ``directory`` to use another one.

>>> import asyncfetch
>>> where = asyncfetch.cache.path()
>>> for entry in asyncfetch.cache.ls():                                    # doctest: +SKIP
...     print(entry.name, entry.size, entry.state)
>>> bad = [r for r in asyncfetch.cache.verify() if r.status == "corrupt"]  # doctest: +SKIP
>>> asyncfetch.cache.prune(max_size="50G", partials=True)                  # doctest: +SKIP
"""

from ._cachedir import CacheEntry, PruneReport, VerifyResult, ls, path, prune, verify

__all__ = ["CacheEntry", "PruneReport", "VerifyResult", "ls", "path", "prune", "verify"]
