"""The one way this project reads topics from their beginning: `TopicReader`.

Every reader has a fresh group id, assigns partitions itself (no group membership, no commits) and
starts at the earliest offset, so each reader sees every record: the model watcher of every
replica, the scheduler counting outcomes, the demo, the tests and the bench. A topic that does not
exist yet reads as empty and is assigned once it appears.

`at_end` uses partition EOF events. Do not compute "the end" from watermarks instead: the local
broker reports them wrong (docs/local-broker.md).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from core.errors import BrokerUnavailableError
from core.kafka import broker_unavailable, consumer_config
from core.settings import Settings

# How often a reader asks the broker whether a missing topic has appeared.
MISSING_TOPIC_RECHECK_SECONDS = 1.0
METADATA_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Record:
    """One consumed record, decoupled from the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int

    def json(self) -> Any:
        return json.loads(self.value or b"null")


class TopicReader:
    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        group_prefix: str = "callscore-reader",
        **consumer_overrides: Any,
    ) -> None:
        from confluent_kafka import Consumer

        self._topics = list(topics)
        self._consumer = Consumer(
            consumer_config(
                settings,
                group_id=f"{group_prefix}-{uuid.uuid4()}",
                **{"enable.partition.eof": True, **consumer_overrides},
            )
        )
        self._servers = settings.bootstrap_servers
        self._assigned: set[str] = set()
        self._unfinished: set[tuple[str, int]] = set()
        self._next_metadata_check = 0.0

    @property
    def at_end(self) -> bool:
        """True when every partition of every existing topic has been read to its end."""
        return not self._unfinished

    @property
    def missing_topics(self) -> list[str]:
        return [t for t in self._topics if t not in self._assigned]

    def _assign_new_topics(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        if not self.missing_topics or time.monotonic() < self._next_metadata_check:
            return
        self._next_metadata_check = time.monotonic() + MISSING_TOPIC_RECHECK_SECONDS
        try:
            metadata = self._consumer.list_topics(timeout=METADATA_TIMEOUT_SECONDS)
        except KafkaException as exc:
            raise broker_unavailable(self._servers, f"({exc.args[0].str()})") from None
        fresh = []
        for topic in self.missing_topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                continue
            self._assigned.add(topic)
            for partition in meta.partitions:
                fresh.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
                self._unfinished.add((topic, partition))
        if fresh:
            self._consumer.incremental_assign(fresh)

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        """The records that arrived since the last call (possibly none), waiting up to timeout."""
        from confluent_kafka import KafkaError

        self._assign_new_topics()
        if not self._assigned:
            time.sleep(min(timeout, MISSING_TOPIC_RECHECK_SECONDS))
            return []
        records = []
        for message in self._consumer.consume(num_messages=max_records, timeout=timeout):
            where = (message.topic() or "", message.partition() or 0)
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._unfinished.discard(where)
                    continue
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise BrokerUnavailableError(f"reading '{where[0]}': {error}")
            self._unfinished.add(where)
            records.append(_record(message))
        return records

    def read_to_end(self, timeout: float = 15.0) -> list[Record]:
        """Every record up to the current end of the topics (missing topics read as empty)."""
        deadline = time.monotonic() + timeout
        records: list[Record] = []
        while time.monotonic() < deadline:
            records.extend(self.poll(0.2))
            if self.at_end:
                return records
        raise BrokerUnavailableError(
            f"could not read {', '.join(self._topics)} to the end within {timeout:.0f} s"
        )

    def read_until(
        self,
        done: Callable[[list[Record]], bool],
        timeout: float,
        settle: float = 0.0,
    ) -> list[Record]:
        """Records until done(records) holds (then `settle` seconds more) or the timeout."""
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        records: list[Record] = []
        while time.monotonic() < deadline:
            records.extend(self.poll(0.2))
            if settle_until is None and done(records):
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
        return records

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


def _headers(raw: Any) -> dict[str, bytes]:
    pairs = raw.items() if isinstance(raw, dict) else raw or []
    return {k: v if isinstance(v, bytes) else (v or "").encode() for k, v in pairs}


def read_partitions(
    settings: Settings, topic: str, partitions: Iterable[int], timeout: float = 60.0
) -> Iterator[Record]:
    """Every record of some partitions from their beginning to their current end (partition EOF,
    not watermarks), as they arrive, the partitions read side by side; a topic that does not
    exist reads as empty. For a reader that takes over partitions' state (the call queue's
    changelog)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    reading = set(partitions)
    if not reading:
        return
    consumer = Consumer(
        consumer_config(
            settings,
            group_id=f"callscore-partition-{uuid.uuid4()}",
            **{"enable.partition.eof": True},
        )
    )
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(reading)])
        while time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                error = message.error()
                if error is None:
                    yield _record(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    reading.discard(message.partition())
                elif error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    return
                else:
                    raise BrokerUnavailableError(f"reading '{topic}': {error}")
                if not reading:
                    return
        raise BrokerUnavailableError(
            f"could not read '{topic}' {sorted(reading)} to the end within {timeout:.0f} s"
        )
    finally:
        consumer.close()


def _record(message: Any) -> Record:
    return Record(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value(),
        headers=_headers(message.headers()),
        timestamp_ms=message.timestamp()[1],
    )


def read_topics(
    settings: Settings,
    topics: Iterable[str],
    done: Callable[[list[Record]], bool] | None = None,
    timeout: float = 15.0,
    settle: float = 0.0,
) -> list[Record]:
    """Read topics from the beginning: to their current end, or until done(records)."""
    with TopicReader(settings, topics) as reader:
        if done is None:
            return reader.read_to_end(timeout)
        return reader.read_until(done, timeout, settle)
