"""The send-retry policy of a batch while the broker is away, without a broker."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamer.retry import RetryBudgetSpent, retry_with_backoff


class BrokerAway(Exception):
    pass


class Flaky:
    """Fails `failures` times with BrokerAway, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise BrokerAway(f"call {self.calls}")


def run(attempt: Flaky, budget: float, cap: float = 0.04) -> tuple[int, list[float]]:
    delays: list[float] = []
    attempts = asyncio.run(
        retry_with_backoff(
            attempt,
            budget_seconds=budget,
            max_backoff_seconds=cap,
            retry_on=(BrokerAway,),
            on_retry=lambda _n, _exc, delay: delays.append(delay),
            first_backoff_seconds=0.01,
        )
    )
    return attempts, delays


def test_retries_with_capped_exponential_backoff_until_it_succeeds() -> None:
    flaky = Flaky(failures=4)
    attempts, delays = run(flaky, budget=5.0)
    assert attempts == 5 and flaky.calls == 5
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.04])


def test_gives_up_when_the_budget_is_spent_with_the_last_error_as_cause() -> None:
    flaky = Flaky(failures=10_000)
    started = time.monotonic()
    with pytest.raises(RetryBudgetSpent) as raised:
        run(flaky, budget=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert isinstance(raised.value.__cause__, BrokerAway)
    assert 5 <= flaky.calls < 20


def test_other_errors_are_not_retried() -> None:
    async def broken() -> None:
        raise ValueError("not the broker")

    with pytest.raises(ValueError, match="not the broker"):
        asyncio.run(
            retry_with_backoff(
                broken,
                budget_seconds=5.0,
                max_backoff_seconds=1.0,
                retry_on=(BrokerAway,),
                on_retry=lambda *_: pytest.fail("retried"),
            )
        )


def test_an_attempt_that_hangs_is_bounded_by_the_budget() -> None:
    async def hangs() -> None:
        await asyncio.sleep(60)

    started = time.monotonic()
    with pytest.raises(RetryBudgetSpent, match="TimeoutError"):
        asyncio.run(
            retry_with_backoff(
                hangs,
                budget_seconds=0.2,
                max_backoff_seconds=1.0,
                retry_on=(BrokerAway,),
                on_retry=lambda *_: None,
            )
        )
    assert time.monotonic() - started < 2.0
