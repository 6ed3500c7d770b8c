"""Run the async API from sync code, inside or outside a running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

T = TypeVar("T")

Running = tuple[asyncio.AbstractEventLoop, "asyncio.Task[Any]"]


def _new_loop_run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
            return asyncio.run(coroutine)
        result: T = uvloop.run(coroutine)
        return result
    except BaseException:
        # Ctrl-C before the loop started it: close it, or Python warns it was never awaited
        coroutine.close()
        raise


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on a private event loop (uvloop when installed).

    When the calling thread already runs an event loop (Jupyter, an async web server), the
    private loop runs in a helper thread and this call blocks until it is done, instead of
    failing with "cannot be called from a running event loop". Ctrl-C stops it either way:
    the coroutine is cancelled (a download keeps its part, journaled, for a resume), then
    KeyboardInterrupt is raised. Under ``asyncio.run`` (3.11+), whose own Ctrl-C handler only
    cancels the main task (which cannot act while this call blocks the loop), Ctrl-C raises
    KeyboardInterrupt here for the length of the call, as in a plain script. A handler the
    application added with ``loop.add_signal_handler`` runs only after the call returns: the
    blocked loop cannot run it.
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
            with _ctrl_c_interrupts():
                return done.result()
        except BaseException:
            if not done.done():  # interrupted while waiting, not a failure of the coroutine
                _cancel(running, done)
            raise


@contextlib.contextmanager
def _ctrl_c_interrupts() -> Iterator[None]:
    """Within the block, Ctrl-C raises KeyboardInterrupt where asyncio's handler would not.

    ``asyncio.run`` (3.11+) answers the first Ctrl-C by cancelling its main task and returning,
    so a main thread blocked in a wait never hears of it and the download would run on to
    the end. While the block runs, its handler is swapped for the default one, and put back
    (the very same object, which asyncio checks for) afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are only ever handled in the main thread
        return
    handler = signal.getsignal(signal.SIGINT)
    if not _is_asyncio_runner_handler(handler):
        yield  # the default handler already raises; a handler of the caller's own is kept
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, handler)


def _is_asyncio_runner_handler(handler: object) -> bool:
    """Whether ``handler`` is the SIGINT handler asyncio.Runner (asyncio.run) installs: a
    ``functools.partial`` of a Runner's bound method."""
    runner_type = getattr(asyncio, "Runner", None)  # Python 3.11+
    if runner_type is None or not isinstance(handler, functools.partial):
        return False
    return isinstance(getattr(handler.func, "__self__", None), runner_type)


def _cancel(running: Future[Running], done: Future[Any]) -> None:
    """Cancel the coroutine's task, as asyncio.run does on Ctrl-C, and wait until it ends."""
    wait([running, done], return_when=FIRST_COMPLETED)
    if running.done() and not done.done():
        loop, task = running.result()
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to stop
            loop.call_soon_threadsafe(task.cancel)
    wait([done])
