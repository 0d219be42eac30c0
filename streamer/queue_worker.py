"""The call queue's single writer: owns partitions of the queue, in a process of its own.

The scorer's agents write every scored event, outcome and do-not-call record to the queue's
input topic at the prospect's partition (callqueue/inputs.py); this worker is a member of its
own consumer group on that topic (`<streamer_app_id>-queue`), so each partition, hence each
prospect, has exactly one writer at a time. For the partitions it owns it:

1. on assignment, rebuilds the new partitions' entries from the compacted changelog
   (Settings.topic_queue_state, same partition numbers) read to its end (partition EOF, never
   watermarks: docs/local-broker.md), keeping the newest record per key itself, since the local
   broker never compacts; the partitions stay paused until then, so nothing of them is applied
   before;
2. applies each consumed batch with the pure rules (callqueue/rules.py: `PartitionQueue`);
3. publishes what they return (prediction log, tier topics, the queue, then, once those are
   acknowledged, the changelog) with one `TopicWriter`, retrying with backoff while the broker
   is away, within Settings.broker_retry_seconds;
4. only then commits the batch's input offsets (at-least-once: an input applied again after a
   failed commit is `redelivered`: its prospect's entry, rebuilt from the changelog, already
   has it applied, so it changes and publishes nothing).

Not a Faust agent: Faust's table recovery trusts watermarks, which the local broker reports
wrong, and a Faust hop costs more per event than the scoring itself (docs/streamer.md,
Performance); confluent-kafka consumes and produces in batches at a fraction of that cost. It
runs in a child process of the scorer (streamer/queue_process.py), not in a thread beside Faust,
so it does not share the scorer's interpreter lock; what the scorer's metrics need of it comes
back as a `QueueProgress` after each batch and rebalance.

A batch that cannot be published within the budget is fatal: `failure` is set, nothing is
committed, and the scorer stops (streamer/app.py), so the partitions go to another replica,
which starts again from the last commit and the changelog.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from callqueue.inputs import KIND_HEADER, InvalidInput, QueueInput, decode_input
from callqueue.rules import PartitionQueue, QueueCounts, QueuePolicy, QueueResult, QueueTopics
from callqueue.state import ProspectEntry, entry_from_json
from core.consumer_lag import queue_group_id
from core.dead_letters import dead_letter_for, dead_letter_record
from core.errors import BrokerUnavailableError
from core.kafka import consumer_config
from core.settings import Settings
from core.topic_reader import read_partitions
from core.topic_writer import Outgoing, PublishError, TopicWriter
from schemas.decode import InvalidEvent
from streamer.scoring import Incoming

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 0.1
CONSUME_WAIT_SECONDS = 0.005
RECOVERY_TIMEOUT_SECONDS = 600.0


@dataclass
class QueueProgress:
    """What the scorer's metrics learn from the queue worker after a batch or a rebalance
    (StreamMetrics.record_queue). Plain data: it crosses from the queue's process to the
    scorer's."""

    partitions: int  # owned now
    open_by_tier: dict[str, int]  # open tasks of the owned partitions, every tier
    entries: int  # prospects the owned partitions keep an entry for
    assigned: bool  # the worker owns its partitions (possibly none)
    counts: QueueCounts | None = None  # of a published batch, its partitions summed
    invalid: int = 0  # inputs of that batch that were not call-queue inputs (dead letters)
    send_retries: int = 0
    recovery_seconds: float | None = None  # of the partitions assigned last, all rebuilt


def ignore_progress(_progress: QueueProgress) -> None:
    """A `report` for a worker nobody watches (bench/tools/queue_recovery.py)."""


class QueueWorker:
    def __init__(self, settings: Settings, report: Callable[[QueueProgress], None]) -> None:
        self._settings = settings
        self._report = report
        self._topics = QueueTopics.of(settings)
        self._policy = QueuePolicy.of(settings)
        self._queues: dict[int, PartitionQueue] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None  # set when the worker gave up (fatal)
        self.assigned = threading.Event()  # set once it owns its partitions (possibly none)
        self._last_error: str | None = None  # of the consumer, while it lasts
        self._pending: set[int] = set()  # assigned, not rebuilt yet (paused)
        self._assignment_changed = False

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="call-queue", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def partitions(self) -> list[int]:
        return sorted(self._queues)

    def _run(self) -> None:
        from confluent_kafka import Consumer

        settings = self._settings
        consumer = Consumer(
            consumer_config(
                settings,
                group_id=queue_group_id(settings),
                **{"client.id": f"call-queue-{uuid.uuid4().hex[:8]}"},
            )
        )
        writer = TopicWriter(settings, "the call queue's records")
        try:
            consumer.subscribe(
                [settings.topic_queue_inputs],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            while not self._stop.is_set():
                if self._assignment_changed:
                    self._take_over(consumer)
                # The inputs come in the scorer's batches already: wait only briefly for more
                # (librdkafka's consume returns at num_messages or the timeout).
                messages = consumer.consume(
                    num_messages=settings.batch_max_size, timeout=CONSUME_WAIT_SECONDS
                )
                batch = self._owned(messages)
                if batch:
                    self._process(batch, writer)
                    self._commit(consumer, batch)
        except BaseException as exc:  # fatal: nothing more is committed
            self.failure = exc
            log.error("call queue worker stopped: %s: %s", type(exc).__name__, exc)
        finally:
            self._queues.clear()
            try:
                consumer.close()
            except Exception as exc:  # closing after a broker outage may fail too
                log.warning("call queue: closing the consumer: %s", exc)

    def _owned(self, messages: Sequence[Any]) -> list[Any]:
        """The messages of partitions this worker owns now (a partition revoked during the poll
        is the next owner's, from its last commit)."""
        owned = []
        for message in messages:
            error = message.error()
            if error is not None:
                # Once per spell of trouble (librdkafka reports each failed reconnection).
                if str(error) != self._last_error:
                    log.warning("call queue: %s; retrying", error)
                self._last_error = str(error)
            elif message.partition() in self._queues:
                owned.append(message)
        if owned and self._last_error is not None:
            log.info("call queue: reading again")
            self._last_error = None
        return owned

    def _commit(self, consumer: Any, batch: Sequence[Any]) -> None:
        from confluent_kafka import KafkaException

        try:
            consumer.commit(offsets=_next_offsets(batch), asynchronous=False)
        except KafkaException as exc:
            # E.g. a rebalance in between: the next owner applies the batch again, and every
            # input its prospect's entry already has applied is `redelivered` (nothing again).
            log.warning("call queue: commit failed (%s): the batch will be applied again", exc)

    # --- partitions --------------------------------------------------------------------------
    # The rebalance callbacks only take note: one that rebuilt the partitions itself ran for
    # seconds inside `consume()`, and the assignment librdkafka makes after it then failed now
    # and then (a SystemError out of `consume()`, 1 scorer start in 3 in the bench). The new
    # partitions are assigned paused and rebuilt by the loop (`_take_over`), as Kafka Streams
    # restores state outside the rebalance listener; only then are they resumed and consumed.
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        consumer.assign(partitions)
        consumer.pause(partitions)
        self._pending.update(tp.partition for tp in partitions)
        self._assignment_changed = True

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._queues.pop(tp.partition, None)
            self._pending.discard(tp.partition)
        self._assignment_changed = True

    def _take_over(self, consumer: Any) -> None:
        """Rebuild the partitions assigned since the last poll, then consume them."""
        from confluent_kafka import TopicPartition

        recovery = None
        if self._pending:
            started = time.monotonic()
            self._queues.update(self._recover(sorted(self._pending)))
            recovery = time.monotonic() - started
            topic = self._settings.topic_queue_inputs
            consumer.resume([TopicPartition(topic, p) for p in sorted(self._pending)])
            log.info("call queue: partitions %s rebuilt in %.2f s", sorted(self._pending), recovery)
            self._pending.clear()
        self._assignment_changed = False
        self.assigned.set()
        self._report(self._progress(recovery_seconds=recovery))

    def _progress(self, **batch: Any) -> QueueProgress:
        queues = list(self._queues.values())
        return QueueProgress(
            partitions=len(queues),
            open_by_tier={t: sum(q.open_by_tier[t] for q in queues) for t in self._topics.tasks},
            entries=sum(len(q.entries) for q in queues),
            assigned=self.assigned.is_set(),
            **batch,
        )

    def _recover(self, partitions: Sequence[int]) -> dict[int, PartitionQueue]:
        """The partitions' entries from the changelog, read side by side to its end; the newest
        record per key kept here, since the local broker never compacts."""
        entries: dict[int, dict[bytes, ProspectEntry]] = {p: {} for p in partitions}
        read: Counter[int] = Counter()
        for record in read_partitions(
            self._settings, self._topics.state, partitions, RECOVERY_TIMEOUT_SECONDS
        ):
            read[record.partition] += 1
            if record.key is None:
                continue
            if record.value is None:
                entries[record.partition].pop(record.key, None)
                continue
            try:
                entries[record.partition][record.key] = entry_from_json(record.value)
            except ValidationError as exc:
                log.warning(
                    "call queue: changelog record at %d@%d skipped: %s",
                    record.partition,
                    record.offset,
                    exc,
                )
        queues = {}
        for partition, found in entries.items():
            queue = queues[partition] = PartitionQueue(
                partition, self._topics, self._policy, found.values()
            )
            log.info(
                "call queue partition %d: %d entries (%d open tasks) from %d changelog records",
                partition,
                len(found),
                sum(queue.open_by_tier.values()),
                read[partition],
            )
        return queues

    # --- batches -----------------------------------------------------------------------------
    def _process(self, messages: Sequence[Any], writer: TopicWriter) -> None:
        now = datetime.now(UTC)
        by_partition: dict[int, list[QueueInput]] = defaultdict(list)
        outgoing: list[Outgoing] = []
        invalid = 0
        for message in messages:
            try:
                item = _decode(message)
            except (InvalidInput, ValidationError) as exc:
                invalid += 1
                outgoing.append(self._dead_letter(message, str(exc), now))
                continue
            by_partition[item.partition].append(item)
        results: list[QueueResult] = []
        for partition, inputs in by_partition.items():
            queue = self._queues[partition]  # `_owned` kept only owned partitions' messages
            result = queue.apply(inputs)
            results.append(result)
            outgoing += result.outgoing
        # The changelog last: it must never run ahead of the queue records it describes, so a
        # restart after a partial publish applies the batch again from state that is not newer.
        state = self._topics.state
        retries = self._publish(writer, [r for r in outgoing if r.topic != state])
        retries += self._publish(writer, [r for r in outgoing if r.topic == state])
        counts = sum((r.counts for r in results), QueueCounts())
        self._report(self._progress(counts=counts, invalid=invalid, send_retries=retries))

    def _publish(self, writer: TopicWriter, outgoing: Sequence[Outgoing]) -> int:
        """send_all, again with backoff while the broker is away, within the retry budget.
        Returns how many times it sent again."""
        settings = self._settings
        deadline = time.monotonic() + settings.broker_retry_seconds
        backoff = FIRST_BACKOFF_SECONDS
        attempt = 0
        while True:
            attempt += 1
            try:
                writer.send_all(outgoing)
                return attempt - 1
            except PublishError as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    raise BrokerUnavailableError(
                        f"call queue: {len(outgoing)} records not acknowledged after {attempt} "
                        f"attempts: {exc}"
                    ) from exc
                log.warning("call queue: %s; attempt %d in %.1f s", exc, attempt + 1, backoff)
                self._stop.wait(min(backoff, remaining))
                backoff = min(backoff * 2, settings.broker_retry_max_backoff_seconds)

    def _dead_letter(self, message: Any, reason: str, now: datetime) -> Outgoing:
        source = Incoming(
            message.key(), message.value(), message.topic(), message.partition(), message.offset()
        )
        error = InvalidEvent("invalid_fields", f"not a call-queue input: {reason}"[:500])
        letter = dead_letter_for(source, error, self._settings.max_message_bytes, now)
        return dead_letter_record(self._settings.topic_dead_letters, letter)


def _decode(message: Any) -> QueueInput:
    headers = dict(message.headers() or [])
    return decode_input(
        message.key(),
        message.value(),
        headers.get(KIND_HEADER),
        message.partition(),
        message.offset(),
    )


def _next_offsets(messages: Sequence[Any]) -> list[Any]:
    from confluent_kafka import TopicPartition

    newest: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic(), m.partition())
        newest[key] = max(newest.get(key, -1), m.offset())
    return [TopicPartition(t, p, offset + 1) for (t, p), offset in newest.items()]
