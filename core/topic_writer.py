"""The one way this project writes to Kafka outside the Faust scorer: `TopicWriter`.

Every producer here (the model topic, the monitor's dead letters, the replay simulator, the test
harness) has the same needs: produce already-serialized records, wait when the client's local
queue is full instead of failing (`BufferError`), and know that the broker acknowledged every
record (`acks=all`) before it reports success, so no caller commits input or prints "published"
for records that were lost. A failure is one error type, `PublishError`, naming what was being
published, where, and the broker's first reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core.errors import BrokerUnavailableError
from core.kafka import producer_config
from core.settings import Settings

FLUSH_TIMEOUT_SECONDS = 15.0
# While the local queue is full, serve delivery reports this long before trying again.
BACKPRESSURE_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Outgoing:
    """One record to produce, already serialized: the producer is given raw bytes."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None  # None: the producer's partitioner chooses by key


class PublishError(BrokerUnavailableError):
    """Records were refused by the broker or not acknowledged in time."""


class TopicWriter:
    """A confluent-kafka producer for `Outgoing` records (`acks=all`; see `producer_config`).

    `send` never raises `BufferError`: it serves delivery reports until the queue has room.
    `flush` returns once the broker acknowledged every record sent so far, or raises
    `PublishError`. Usable as a context manager that flushes on a clean exit.
    """

    def __init__(self, settings: Settings, what: str, **overrides: Any) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(producer_config(settings, **overrides))
        self._servers = settings.bootstrap_servers
        self._what = what
        self._failures: list[str] = []
        self.sent = 0

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self._failures.append(str(error))

    def send(self, record: Outgoing) -> None:
        from confluent_kafka import KafkaException

        # None: the partitioner chooses by key (the client's stubs want their own header type).
        where: dict[str, Any] = {} if record.partition is None else {"partition": record.partition}
        headers: Any = record.headers or None
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    key=record.key,
                    value=record.value,
                    headers=headers,
                    on_delivery=self._delivered,
                    **where,
                )
                break
            except BufferError:
                self._producer.poll(BACKPRESSURE_POLL_SECONDS)
            except KafkaException as exc:
                raise self._error(str(exc.args[0])) from None
        self._producer.poll(0)
        self.sent += 1

    def poll(self, timeout: float) -> None:
        """Serve delivery reports for up to `timeout` seconds (doubles as a paced wait)."""
        self._producer.poll(timeout)

    @property
    def failed(self) -> bool:
        """True once the broker refused a record (checked without waiting)."""
        return bool(self._failures)

    def flush(self, timeout: float = FLUSH_TIMEOUT_SECONDS) -> None:
        remaining = self._producer.flush(timeout)
        if self._failures:
            raise self._error(f"the broker refused a record: {self._failures[0]}")
        if remaining:
            raise self._error(f"{remaining} record(s) not acknowledged within {timeout:.0f} s")

    def send_all(self, records: Iterable[Outgoing], timeout: float = FLUSH_TIMEOUT_SECONDS) -> int:
        """Send every record, then wait for all acknowledgements. Returns how many were sent."""
        before = self.sent
        for record in records:
            self.send(record)
        self.flush(timeout)
        return self.sent - before

    def _error(self, reason: str) -> PublishError:
        return PublishError(f"could not publish {self._what} to Kafka at {self._servers}: {reason}")

    def __enter__(self) -> TopicWriter:
        return self

    def __exit__(self, exc_type: object, *_rest: object) -> None:
        if exc_type is None:
            self.flush()


def publish(
    settings: Settings,
    records: Iterable[Outgoing],
    what: str,
    timeout: float = FLUSH_TIMEOUT_SECONDS,
    **overrides: Any,
) -> int:
    """Produce `records` and return once the broker acknowledged all of them."""
    return TopicWriter(settings, what, **overrides).send_all(records, timeout)
