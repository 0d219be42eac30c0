"""Retrying a batch's sends while the broker is away: exponential backoff within a time budget.

No Faust or Kafka here (the caller names the errors worth retrying), so the policy is unit-tested
without a broker (tests/test_broker_retry.py); streamer/app.py uses it around `send_all`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

FIRST_BACKOFF_SECONDS = 0.1


class RetryBudgetSpent(RuntimeError):
    """The attempts did not succeed within the time budget; the last error is its cause."""


async def retry_with_backoff(
    attempt: Callable[[], Awaitable[None]],
    *,
    budget_seconds: float,
    max_backoff_seconds: float,
    retry_on: tuple[type[BaseException], ...],
    on_retry: Callable[[int, BaseException, float], None],
    first_backoff_seconds: float = FIRST_BACKOFF_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Await `attempt()` until it succeeds; returns the number of attempts made.

    An error of `retry_on` (or an attempt still running when the budget ends: a send can wait on
    the broker far longer than the budget) is retried after a backoff doubling from
    `first_backoff_seconds` up to `max_backoff_seconds`, while the budget lasts; `on_retry(failed
    attempt number, error, delay)` is called before each wait. Any other error propagates at once.
    """
    deadline = clock() + budget_seconds
    retryable: tuple[type[BaseException], ...] = (*retry_on, TimeoutError)
    backoff = first_backoff_seconds
    attempts = 0
    while True:
        attempts += 1
        try:
            async with asyncio.timeout(max(deadline - clock(), 0.0)):
                await attempt()
            return attempts
        except retryable as exc:
            remaining = deadline - clock()
            if remaining <= 0:
                raise RetryBudgetSpent(
                    f"{attempts} attempts in {budget_seconds:.0f} s, the last one failed with "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            delay = min(backoff, remaining)
            on_retry(attempts, exc, delay)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, max_backoff_seconds)
