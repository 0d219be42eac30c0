"""The broker a test session talks to (never a mock): KAFKA_BOOTSTRAP_SERVERS if set, else
Apache Kafka started from Maven Central's jars (core/local_broker/kafka.py); Tansu only when
asked for with CALLQUEUE_TEST_BROKER=tansu (the fallback's own runs)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from core.local_broker import LocalBroker, start_local_broker

# Which local broker a test session starts: "kafka" (the default) or "tansu".
TEST_BROKER_VARIABLE = "CALLQUEUE_TEST_BROKER"


@contextmanager
def kafka_for_tests() -> Iterator[LocalBroker]:
    """KAFKA_BOOTSTRAP_SERVERS (an Apache Kafka) if set; else a fresh local broker."""
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield LocalBroker(servers, "kafka", "KAFKA_BOOTSTRAP_SERVERS")
        return
    kind = os.environ.get(TEST_BROKER_VARIABLE, "kafka")
    if kind not in ("kafka", "tansu"):
        raise ValueError(f"{TEST_BROKER_VARIABLE} must be kafka or tansu, not {kind!r}")
    broker = start_local_broker(kind)  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()
