"""One answer's body, copied into the part file at a range's position, batch by batch: what
ends the copy, what is a truncated body, and what is kept when the copy is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from .._errors import TruncatedBody
from .._transport.aiobody import Body
from .planner import Task

Write = Callable[[Sequence[bytes | memoryview], int], Awaitable[None]]
"""Write a batch of ``length`` bytes at ``task.pos`` and move ``task.pos`` past them."""


async def copy_body(body: Body, task: Task, write: Write, *, to_eof: bool = False) -> None:
    """Copy the body to the part file at ``task.pos`` until ``task.stop``, batch by batch.

    ``task.pos`` only moves past bytes that are written, so a retry continues exactly
    where this attempt got to; the body hands over what it received before an error
    ahead of the error. With ``to_eof``, a clean end of the body ends the copy.
    """
    while task.pos < task.stop:
        try:
            batch = await body.next_batch()
        except asyncio.CancelledError:
            # best effort: any error here must not replace the cancellation (a retryable
            # one would make the retry loop start a new attempt in a cancelled task)
            with contextlib.suppress(Exception):
                await asyncio.shield(_keep_leftover(body, task, write))
            raise
        if not batch:
            if to_eof or task.pos >= task.stop or _ended_short(body, task):
                break
            raise TruncatedBody(
                f"{body.url}: body ended at byte {task.pos}, expected up to {task.stop}",
                url=body.url,
            )
        await write(batch, sum(len(b) for b in batch))
    if body.byte_range is not None and task.stop < body.byte_range.end:
        body.abandon()  # a thief took the rest of this range


async def _keep_leftover(body: Body, task: Task, write: Write) -> None:
    """On cancellation, write what the body had received, so a resume need not fetch it."""
    offset, data = body.leftover()
    if data and offset == task.pos:
        await write([data], len(data))


def _ended_short(body: Body, task: Task) -> bool:
    """Whether ``body`` ended cleanly at its own end, short of ``task.stop``: a 206 that
    answered the start of the range asked, with at least one byte."""
    asked, size = body.byte_range, body.size
    return asked is not None and size is not None and size > 0 and task.pos == asked.start + size
