"""The one way this project reads topics: `TopicReader` (from their beginning, or from a time),
`read_spans` (parts of partitions), and `offsets_at` (where a time starts in each partition).

Every reader has a fresh group id, assigns partitions itself (no group membership, no commits)
and starts at the earliest offset unless told a time, so each reader sees every record: the
model watcher of every replica, the monitor, the demo, the tests and the bench. A topic that
does not exist yet reads as empty and is assigned once it appears. A reader given a `group_id`
(the monitor) commits how far it has read there with `commit_positions`, only so that the group's
lag can be seen (core/consumer_lag.py): it still starts where it is told, never at a commit.

`at_end` uses partition EOF events. Do not compute "the end" from watermarks instead: the local
broker reports them wrong (docs/local-broker.md).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import BrokerUnavailableError
from core.kafka import broker_unavailable, client_config, consumer_config
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
    """Reads topics as they grow, each partition from its beginning, or, for a topic in
    `start_at_ms` (topic -> Kafka timestamp in ms), from its first offset stamped at or after
    that time: the consumer's `offsets_for_times` answer when the topic is assigned (see
    `start_offsets`; a partition without such a record starts at its end). Like `offsets_at`,
    that start is a lower bound: a broker without a time index answers 0 (the local broker), and
    timestamps need not follow offsets, so records stamped earlier may be read too."""

    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        group_prefix: str = "callscore-reader",
        *,
        start_at_ms: Mapping[str, int] | None = None,
        group_id: str | None = None,
        **consumer_overrides: Any,
    ) -> None:
        from confluent_kafka import Consumer

        self._topics = list(topics)
        self._start_at_ms = dict(start_at_ms or {})
        # Per partition, the offset after the last record returned (or where its EOF was), and
        # the last one the broker confirmed as committed (`commit_positions`).
        self._positions: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._consumer = Consumer(
            consumer_config(
                settings,
                group_id=group_id or f"{group_prefix}-{uuid.uuid4()}",
                **{
                    "enable.partition.eof": True,
                    "on_commit": self._on_commit,
                    **consumer_overrides,
                },
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
        appeared = {}
        for topic in self.missing_topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                continue
            appeared[topic] = sorted(meta.partitions)
        starts = {(t, p): OFFSET_BEGINNING for t, ps in appeared.items() for p in ps}
        for topic in sorted(appeared.keys() & self._start_at_ms.keys()):
            found = _offsets_for_times(
                self._consumer,
                self._servers,
                [(topic, p) for p in appeared[topic]],
                self._start_at_ms[topic],
            )
            starts.update(start_offsets(found))
        # Only now, once every lookup answered: a topic whose lookup failed is tried again.
        self._assigned.update(appeared)
        self._unfinished.update(starts)
        if starts:
            self._consumer.incremental_assign([TopicPartition(*w, o) for w, o in starts.items()])

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
                    self._positions[where] = message.offset() or 0
                    continue
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise BrokerUnavailableError(f"reading '{where[0]}': {error}")
            self._unfinished.add(where)
            record = _record(message)
            self._positions[where] = record.offset + 1
            records.append(record)
        return records

    def commit_positions(self) -> None:
        """Commit, asynchronously, each partition's position (after the last record `poll`
        returned, or its end) that the broker has not confirmed yet. For a reader given a
        `group_id`, once the records returned are handled: the group's lag is then what is
        left to handle. A commit that fails (the broker away) is sent again by the next call."""
        from confluent_kafka import KafkaException, TopicPartition

        moved = {w: o for w, o in self._positions.items() if self._committed.get(w) != o}
        if not moved:
            return
        # A refusal here (e.g. no coordinator yet) is left to the next call, which sends again.
        with contextlib.suppress(KafkaException):
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(moved.items())],
                asynchronous=True,
            )

    def _on_commit(self, error: Any, partitions: list[Any]) -> None:
        """librdkafka's answer to a commit (served by `poll`): what it confirms is done."""
        if error is not None:
            return
        for tp in partitions:
            if tp.error is None and tp.offset >= 0:
                self._committed[(tp.topic, tp.partition)] = tp.offset

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


@dataclass(frozen=True)
class Span:
    """Where to read one partition: from `start` (an offset, or OFFSET_BEGINNING/OFFSET_END) to
    `stop` (exclusive; None: its current end, partition EOF), or up to its first record
    stamped at or after `until_ms` (a reader whose records are roughly in time order)."""

    start: int
    stop: int | None = None
    until_ms: int | None = None


def read_spans(
    settings: Settings,
    spans: Mapping[tuple[str, int], Span],
    timeout: float = 60.0,
    reached: dict[tuple[str, int], int] | None = None,
    **consumer_overrides: Any,
) -> Iterator[Record]:
    """Every record of some partitions' spans, as they arrive, the partitions read side by side
    (end = partition EOF, never watermarks); a topic that does not exist reads as empty.
    `reached`, when given, is filled with each partition's next offset to read (after its last
    record, or where its EOF was): a later read continues there. `consumer_overrides` go into
    the consumer's config (e.g. `log_level`)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    ends = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF)
    reading = {w for w, span in spans.items() if span.stop is None or span.start < span.stop}
    if not reading:
        return
    consumer = Consumer(
        consumer_config(
            settings,
            group_id=f"callscore-partition-{uuid.uuid4()}",
            **{"enable.partition.eof": True, **consumer_overrides},
        )
    )
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(t, p, spans[(t, p)].start) for t, p in sorted(reading)])
        while time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                where = (message.topic() or "", message.partition() or 0)
                if where not in reading:
                    continue  # a partition already done: records fetched before its pause
                error = message.error()
                if error is not None:
                    if error.code() in ends:
                        reading.discard(where)
                        if reached is not None and error.code() == KafkaError._PARTITION_EOF:
                            reached[where] = message.offset() or 0
                    else:
                        raise BrokerUnavailableError(f"reading '{where[0]}': {error}")
                else:
                    record = _record(message)
                    span = spans[where]
                    past = (span.stop is not None and record.offset >= span.stop) or (
                        span.until_ms is not None and record.timestamp_ms >= span.until_ms
                    )
                    if past:
                        reading.discard(where)
                    else:
                        if reached is not None:
                            reached[where] = record.offset + 1
                        yield record
                        if span.stop is not None and record.offset + 1 >= span.stop:
                            reading.discard(where)
                if where not in reading:
                    consumer.pause([TopicPartition(*where)])
                if not reading:
                    return
        topics = sorted({t for t, _p in reading})
        raise BrokerUnavailableError(
            f"could not read {', '.join(topics)} to the end within {timeout:.0f} s"
        )
    finally:
        consumer.close()


def read_partitions(
    settings: Settings, topic: str, partitions: Iterable[int], timeout: float = 60.0
) -> Iterator[Record]:
    """Every record of some partitions from their beginning to their current end. For a reader
    that takes over partitions' state (the call queue's changelog)."""
    from confluent_kafka import OFFSET_BEGINNING

    spans = {(topic, p): Span(OFFSET_BEGINNING) for p in partitions}
    return read_spans(settings, spans, timeout)


def partitions_of(settings: Settings, topics: Iterable[str]) -> list[tuple[str, int]]:
    """Every (topic, partition) of the topics that exist now."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings))
    try:
        metadata = admin.list_topics(timeout=METADATA_TIMEOUT_SECONDS)
    except KafkaException as exc:
        raise broker_unavailable(settings.bootstrap_servers, f"({exc.args[0].str()})") from None
    found: list[tuple[str, int]] = []
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is not None and meta.error is None:
            found.extend((topic, p) for p in sorted(meta.partitions))
    return found


def offsets_at(
    settings: Settings,
    partitions: Iterable[tuple[str, int]],
    timestamp_ms: int,
    **consumer_overrides: Any,
) -> dict[tuple[str, int], int | None]:
    """Each partition's first offset whose record is stamped at or after `timestamp_ms` (every
    earlier offset is stamped before it); None when no record is. A lower bound on brokers that
    do not index time (the local broker answers 0): read from it and filter, never trust it
    as an exact cut."""
    from confluent_kafka import Consumer

    wanted = list(partitions)
    if not wanted:
        return {}
    consumer = Consumer(
        consumer_config(
            settings, group_id=f"callscore-offsets-{uuid.uuid4()}", **consumer_overrides
        )
    )
    try:
        found = _offsets_for_times(consumer, settings.bootstrap_servers, wanted, timestamp_ms)
    finally:
        consumer.close()
    return offsets_by_time(found)


def _offsets_for_times(
    consumer: Any, servers: str, partitions: Iterable[tuple[str, int]], timestamp_ms: int
) -> list[Any]:
    """The consumer's offsets_for_times answer (TopicPartitions) for the partitions at a time;
    the broker not answering raises BrokerUnavailableError. Used by `offsets_at` and
    `TopicReader`; read the answer with `offsets_by_time` or `start_offsets`."""
    from confluent_kafka import KafkaException, TopicPartition

    wanted = [TopicPartition(t, p, timestamp_ms) for t, p in partitions]
    try:
        return list(consumer.offsets_for_times(wanted, timeout=METADATA_TIMEOUT_SECONDS * 2))
    except KafkaException as exc:
        raise broker_unavailable(servers, f"({exc.args[0].str()})") from None


def offsets_by_time(answer: Iterable[Any]) -> dict[tuple[str, int], int | None]:
    """An offsets_for_times answer (TopicPartitions: topic, partition, offset, error) as each
    partition's first offset stamped at or after the time asked; None when no record is (the
    broker answers -1). A partition answered with an error raises BrokerUnavailableError."""
    found = list(answer)
    failed = [tp for tp in found if tp.error is not None]
    if failed:
        tp = failed[0]
        reason = tp.error.str() if hasattr(tp.error, "str") else str(tp.error)
        raise BrokerUnavailableError(
            " ".join(f"finding offsets by time in '{tp.topic}' [{tp.partition}]: {reason}".split())
        )
    return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in found}


def start_offsets(answer: Iterable[Any]) -> dict[tuple[str, int], int]:
    """Where a `TopicReader` starts the partitions of a topic read from a time, given the
    offsets_for_times answer: the offset found, or OFFSET_END for a partition without a record
    stamped at or after the time (only newer records are read); an error raises like
    `offsets_by_time`."""
    from confluent_kafka import OFFSET_END

    return {w: OFFSET_END if o is None else o for w, o in offsets_by_time(answer).items()}


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
