"""Run the async API from sync code, inside or outside a running event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _new_loop_run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(coroutine)
    result: T = uvloop.run(coroutine)
    return result


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on a private event loop (uvloop when installed).

    When the calling thread already runs an event loop (Jupyter, an async web server), the
    private loop runs in a helper thread and this call blocks until it is done, instead of
    failing with "cannot be called from a running event loop".
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _new_loop_run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="asyncfetch-sync") as pool:
        return pool.submit(_new_loop_run, coroutine).result()
