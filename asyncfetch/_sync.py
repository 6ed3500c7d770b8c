"""Run the async API from sync code, inside or outside a running event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

T = TypeVar("T")

Running = tuple[asyncio.AbstractEventLoop, "asyncio.Task[Any]"]


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
    failing with "cannot be called from a running event loop". Ctrl-C stops it either way:
    the coroutine is cancelled (a download keeps its part, journaled, for a resume), then
    KeyboardInterrupt is raised.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _new_loop_run(coroutine)
    return _run_in_thread(coroutine)


def _run_in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a private loop in a helper thread; if the wait is interrupted
    (KeyboardInterrupt), cancel it and let it wind down before raising."""
    running: Future[Running] = Future()

    async def tracked() -> T:
        task = asyncio.current_task()
        assert task is not None
        running.set_result((asyncio.get_running_loop(), task))
        return await coroutine

    with ThreadPoolExecutor(1, thread_name_prefix="asyncfetch-sync") as pool:
        done = pool.submit(_new_loop_run, tracked())
        try:
            return done.result()
        except BaseException:
            if not done.done():  # interrupted while waiting, not a failure of the coroutine
                _cancel(running, done)
            raise


def _cancel(running: Future[Running], done: Future[Any]) -> None:
    """Cancel the coroutine's task, as asyncio.run does on Ctrl-C, and wait until it ends."""
    wait([running, done], return_when=FIRST_COMPLETED)
    if running.done() and not done.done():
        loop, task = running.result()
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to stop
            loop.call_soon_threadsafe(task.cancel)
    wait([done])
