"""RetryPolicy → tenacity: which failures are worth retrying, how long to wait, when to stop.

The only module that touches tenacity.
"""

from __future__ import annotations

from collections.abc import Callable

import tenacity

from ._config import MAX_RETRY_AFTER, RetryPolicy
from ._errors import TransportError

WaitHint = Callable[[BaseException], float | None]


def is_retryable(error: BaseException) -> bool:
    """Connection errors, timeouts, truncation, 408, 429 and 5xx are; everything else is not."""
    return isinstance(error, TransportError) and error.retryable


class _StopWithoutProgress:
    """Stop after ``attempts`` tries in a row that each moved ``progress()`` by nothing.

    A range whose connection keeps breaking but gains bytes each time is not given up on.
    """

    def __init__(self, attempts: int, progress: Callable[[], int]) -> None:
        self._attempts = attempts
        self._progress = progress
        self._last = progress()
        self._fruitless = 0

    def __call__(self, state: tenacity.RetryCallState) -> bool:
        now = self._progress()
        self._fruitless = 0 if now > self._last else self._fruitless + 1
        self._last = now
        return self._attempts == 1 or self._fruitless >= self._attempts


def retrying(
    policy: RetryPolicy,
    *,
    progress: Callable[[], int],
    wait_hint: WaitHint | None = None,
) -> tenacity.AsyncRetrying:
    """A tenacity loop for one byte range.

    Args:
        policy: attempts, backoff and the sleep to use.
        progress: how far the range has got; attempts that gain bytes do not count.
        wait_hint: given the last error, a wait to use instead of the backoff (for example 0
            when another source can take over), or None for the backoff.
    """
    backoff = tenacity.wait_exponential(
        multiplier=policy.backoff_initial, max=policy.backoff_max
    ) + tenacity.wait_random(0, policy.jitter)

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        hint = wait_hint(error) if wait_hint and error else None
        if hint is None and isinstance(error, TransportError) and error.retry_after is not None:
            hint = error.retry_after
        return min(hint, MAX_RETRY_AFTER) if hint is not None else backoff(state)

    return tenacity.AsyncRetrying(
        stop=_StopWithoutProgress(policy.attempts, progress),
        wait=wait,
        retry=tenacity.retry_if_exception(is_retryable),
        sleep=policy.sleep,
        reraise=True,
    )
