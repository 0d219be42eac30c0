"""The call queue's single writer: a thread of the scorer that owns partitions of the queue.

The scorer's agents write every scored event, outcome and do-not-call record to the queue's
input topic at the prospect's partition (callqueue/inputs.py); this worker is a member of its
own consumer group on that topic (`<streamer_app_id>-queue`), so each partition, hence each
prospect, has exactly one writer at a time. For the partitions it owns it:

1. on assignment, rebuilds each partition's entries from the compacted changelog
   (Settings.topic_queue_state, same partition number) read to its end (partition EOF, never
   watermarks: docs/local-broker.md), keeping the newest record per key itself, since the local
   broker never compacts; nothing of that partition is applied before;
2. applies each consumed batch with the pure rules (callqueue/rules.py: `PartitionQueue`);
3. publishes what they return (prediction log, tier topics, the queue, then, once those are
   acknowledged, the changelog) with one `TopicWriter`, retrying with backoff while the broker
   is away, within Settings.broker_retry_seconds;
4. only then commits the batch's input offsets (at-least-once: a redelivered input is a
   `duplicate` and publishes the same records again, with the same keys and task ids).

Not a Faust agent: Faust's table recovery trusts watermarks, which the local broker reports
wrong, and a Faust hop costs more per event than the scoring itself (docs/streamer.md,
Performance); confluent-kafka consumes and produces in batches at a fraction of that cost.

A batch that cannot be published within the budget is fatal: `failure` is set, nothing is
committed, and the scorer's service stops the worker process (streamer/app.py), so the
partitions go to another replica, which starts again from the last commit and the changelog.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from callqueue.inputs import KIND_HEADER, InvalidInput, QueueInput, decode_input
from callqueue.rules import PartitionQueue, QueuePolicy, QueueResult, QueueTopics
from callqueue.state import ProspectEntry, entry_from_json
from core.dead_letters import dead_letter_for, dead_letter_record
from core.errors import BrokerUnavailableError
from core.kafka import consumer_config
from core.settings import Settings
from core.topic_reader import read_partition
from core.topic_writer import Outgoing, PublishError, TopicWriter
from schemas.decode import InvalidEvent
from streamer.metrics import StreamMetrics
from streamer.scoring import Incoming

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
FIRST_BACKOFF_SECONDS = 0.1
RECOVERY_TIMEOUT_SECONDS = 600.0


class QueueWorker:
    def __init__(self, settings: Settings, metrics: StreamMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._topics = QueueTopics.of(settings)
        self._policy = QueuePolicy.of(settings)
        self._queues: dict[int, PartitionQueue] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None  # set when the worker gave up (fatal)
        self.assigned = threading.Event()  # set once it owns its partitions (possibly none)
        self._last_error: str | None = None  # of the consumer, while it lasts

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="call-queue", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def partitions(self) -> list[int]:
        return sorted(self._queues)

    def _run(self) -> None:
        from confluent_kafka import Consumer

        settings = self._settings
        consumer = Consumer(
            consumer_config(
                settings,
                group_id=f"{settings.streamer_app_id}-queue",
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
                messages = consumer.consume(
                    num_messages=settings.batch_max_size, timeout=POLL_SECONDS
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
            # input it already published is a duplicate that publishes the same records.
            log.warning("call queue: commit failed (%s): the batch will be applied again", exc)

    # --- partitions --------------------------------------------------------------------------
    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._queues[tp.partition] = self._recover(tp.partition)
        self._metrics.queue_partitions.set(len(self._queues))
        self._refresh_open_gauge()
        self.assigned.set()

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._queues.pop(tp.partition, None)
        self._metrics.queue_partitions.set(len(self._queues))
        self._refresh_open_gauge()

    def _recover(self, partition: int) -> PartitionQueue:
        started = time.monotonic()
        entries: dict[bytes, ProspectEntry] = {}
        read = 0
        for record in read_partition(
            self._settings, self._topics.state, partition, RECOVERY_TIMEOUT_SECONDS
        ):
            read += 1
            if record.key is None:
                continue
            if record.value is None:
                entries.pop(record.key, None)
                continue
            try:
                entries[record.key] = entry_from_json(record.value)
            except ValidationError as exc:
                log.warning(
                    "call queue: changelog record at offset %d skipped: %s", record.offset, exc
                )
        queue = PartitionQueue(partition, self._topics, self._policy, entries.values())
        seconds = time.monotonic() - started
        self._metrics.queue_recovery_seconds.set(seconds)
        log.info(
            "call queue partition %d: %d entries (%d open tasks) from %d changelog records in "
            "%.2f s",
            partition,
            len(entries),
            len(queue.open_tasks()),
            read,
            seconds,
        )
        return queue

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
        self._publish(writer, [r for r in outgoing if r.topic != state])
        self._publish(writer, [r for r in outgoing if r.topic == state])
        self._metrics.record_queue(results, invalid)
        self._refresh_open_gauge()

    def _publish(self, writer: TopicWriter, outgoing: Sequence[Outgoing]) -> None:
        """send_all, again with backoff while the broker is away, within the retry budget."""
        settings = self._settings
        deadline = time.monotonic() + settings.broker_retry_seconds
        backoff = FIRST_BACKOFF_SECONDS
        attempt = 0
        while True:
            attempt += 1
            try:
                writer.send_all(outgoing)
                return
            except PublishError as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    raise BrokerUnavailableError(
                        f"call queue: {len(outgoing)} records not acknowledged after {attempt} "
                        f"attempts: {exc}"
                    ) from exc
                self._metrics.send_retries.inc()
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

    def _refresh_open_gauge(self) -> None:
        for tier in self._topics.tasks:
            count = sum(q.open_by_tier[tier] for q in list(self._queues.values()))
            self._metrics.queue_open_tasks.labels(tier).set(count)


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
