"""RetryPolicy → tenacity: which failures are worth retrying, how long to wait, when to stop.

Every wait is visible: before it, a warning is logged on the ``asyncfetch`` logger (what
failed, attempt k of n, the wait) and the caller's ``on_retry`` gets a :class:`RetryNotice`
(the download turns it into a ``retry`` progress event). A permanent failure (an HTTP 401,
403 or 404, a certificate that does not verify: ``retryable`` False) is not retried at all.

The only module that touches tenacity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import tenacity

from .._config import MAX_RETRY_AFTER, RetryPolicy
from .._errors import TransportError

log = logging.getLogger("asyncfetch")

WaitHint = Callable[[BaseException], float | None]


@dataclass(frozen=True)
class RetryNotice:
    """A failed try that will be tried again after ``wait`` seconds.

    Attributes:
        attempt: the try that failed, counted since the last one that made progress.
        of: the tries allowed without progress (the policy's ``attempts``).
        wait: seconds until the next try.
        error: what failed (the error's message, which names the URL).
    """

    attempt: int
    of: int
    wait: float
    error: str

    def __str__(self) -> str:
        return f"{self.error}; attempt {self.attempt} of {self.of}, waiting {self.wait:.1f} s"


OnRetry = Callable[[RetryNotice], None]

#: What tries must gain, together, to count as progress: a server or proxy that cuts every
#: answer after a few bytes would otherwise keep a download going (and never failing) for ever.
MIN_PROGRESS = 64 << 10


def is_retryable(error: BaseException) -> bool:
    """Connection errors, timeouts, truncation, 408, 429 and 5xx are; everything else is not."""
    return isinstance(error, TransportError) and error.retryable


class _Fruitless:
    """How many tries in a row have moved ``progress()`` by less than MIN_PROGRESS together,
    counted once per attempt (tenacity asks the stop and the wait about each failure, in an
    order of its choosing)."""

    def __init__(self, progress: Callable[[], int]) -> None:
        self._progress = progress
        self._last = progress()
        self._count = 0
        self._attempt = 0

    def count(self, state: tenacity.RetryCallState) -> int:
        """The tries since the range last gained MIN_PROGRESS, the one that just failed
        included."""
        if state.attempt_number != self._attempt:
            self._attempt = state.attempt_number
            now = self._progress()
            if now - self._last >= MIN_PROGRESS:
                self._count, self._last = 0, now
            else:
                self._count += 1
        return self._count


def retrying(
    policy: RetryPolicy,
    *,
    progress: Callable[[], int],
    wait_hint: WaitHint | None = None,
    on_retry: OnRetry | None = None,
) -> tenacity.AsyncRetrying:
    """A tenacity loop for one byte range.

    A range whose connection keeps breaking but gains bytes each time is not given up on, and
    its waits stay short: the stop and the backoff count only the tries since the range last
    gained MIN_PROGRESS (a trickle of a few bytes a try is no progress).

    Args:
        policy: attempts, backoff and the sleep to use.
        progress: how far the range has got; tries that gain MIN_PROGRESS do not count.
        wait_hint: given the last error, a wait to use instead of the backoff (for example 0
            when another source can take over), or None for the backoff.
        on_retry: told about each wait, after it is logged.
    """
    fruitless = _Fruitless(progress)
    jitter = tenacity.wait_random(0, policy.jitter)

    def backoff(state: tenacity.RetryCallState) -> float:
        doublings = min(max(fruitless.count(state) - 1, 0), 64)
        return min(policy.backoff_initial * 2.0**doublings, policy.backoff_max) + jitter(state)

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        hint = wait_hint(error) if wait_hint and error else None
        if hint is None and isinstance(error, TransportError) and error.retry_after is not None:
            hint = error.retry_after
        return min(hint, MAX_RETRY_AFTER) if hint is not None else backoff(state)

    def stop(state: tenacity.RetryCallState) -> bool:
        return policy.attempts == 1 or fruitless.count(state) >= policy.attempts

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        notice = RetryNotice(
            attempt=max(fruitless.count(state), 1),
            of=policy.attempts,
            wait=state.next_action.sleep if state.next_action else 0.0,
            error=(str(error) or type(error).__name__) if error else "",
        )
        log.warning("%s", notice)
        if on_retry is not None:
            on_retry(notice)

    return tenacity.AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception(is_retryable),
        sleep=policy.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
