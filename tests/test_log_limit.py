"""The Kafka clients' log rate limit and the broker check's state changes, without a broker."""

from __future__ import annotations

import logging

import pytest

from core.kafka_logs import RateLimitFilter, limit_kafka_logs
from core.settings import Settings
from streamer.broker_check import BrokerCheck
from streamer.metrics import StreamMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str = "Unable connect to node %s", *args: object) -> logging.LogRecord:
    return logging.LogRecord("aiokafka.client", logging.ERROR, __file__, 1, message, args, None)


def test_bucket_lets_a_burst_then_the_rate_through_and_counts_the_rest() -> None:
    clock = Clock()
    limiter = RateLimitFilter(per_second=2.0, burst=5, clock=clock)
    passed = 0
    for second in range(60):  # a one-minute outage, 100 lines per second
        clock.now = float(second)
        passed += sum(limiter.filter(record("line %d", i)) for i in range(100))
    assert passed == 5 + 59 * 2  # the burst, then 2 per second
    assert limiter.dropped_total == 6000 - passed


def test_first_line_after_drops_says_how_many_were_dropped() -> None:
    clock = Clock()
    limiter = RateLimitFilter(per_second=1.0, burst=1, clock=clock)
    assert limiter.filter(record("node %s", 1))
    assert not limiter.filter(record("node %s", 2))
    assert not limiter.filter(record("node %s", 3))
    clock.now = 1.0
    passed = record("node %s", 4)
    assert limiter.filter(passed)
    assert passed.getMessage() == "node 4 [2 Kafka client log lines dropped]"
    assert limiter.dropped == 0


def test_attached_to_each_kafka_logger_once() -> None:
    limiter = RateLimitFilter(per_second=1.0, burst=1)
    child = logging.getLogger("aiokafka.test-log-limit")
    other = logging.getLogger("streamer.test-log-limit")
    try:
        attached = limit_kafka_logs(limiter)
        assert "aiokafka.test-log-limit" in attached and "librdkafka" in attached
        assert limiter in child.filters and limiter not in other.filters
        assert limit_kafka_logs(limiter) == []  # idempotent
    finally:
        for name in attached:
            logging.getLogger(name).removeFilter(limiter)


def test_broker_check_flips_gauge_and_logs_only_changes(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = StreamMetrics()
    check = BrokerCheck(settings, metrics)
    assert check.reachable is False  # not ready before the first answer
    caplog.set_level(logging.INFO, logger="streamer.broker_check")
    check.record(True, None)
    assert check.reachable and metrics.broker_reachable._value.get() == 1
    for _ in range(20):
        check.record(False, "Local: Broker transport failure")
    assert not check.reachable and metrics.broker_reachable._value.get() == 0
    check.record(True, None)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("broker unreachable (Local: Broker transport failure)")
    assert messages[1].startswith("broker reachable again after")
