"""Consumer lag of the deployment's consumer groups, from the brokers' watermarks and the groups'
committed offsets.

Three groups consume this system's topics (`deployment_groups`, the one place their names and
topics are written down):

- the scorers, a Faust app: group `Settings.streamer_app_id` on the prospects, the outcomes and
  the do-not-call topic (streamer/app.py's agents);
- the call queue's workers: group `<streamer_app_id>-queue` on the queue's input topic
  (streamer/queue_worker.py);
- the monitor: group `<streamer_app_id>-monitor` on the model topic, the prediction log and the
  outcomes. The monitor is not a group member (it assigns its partitions and starts from its
  lookback, monitor/worker.py); it commits how far it has handled its topics to that group only
  so that its lag can be seen, here and by any Kafka tool.

The lag of a partition is the number of records the group has still to read there:
high watermark - committed offset. A partition where the group has committed nothing counts from
its low watermark (every record still kept is unread): that is where these consumers start
(`auto.offset.reset=earliest`). A committed offset below the low watermark (retention deleted
records the group never read) also counts from the low watermark, since those records are gone.
The arithmetic is the pure `partition_lag`/`group_lag`; `LagReader` is the only Kafka call:
each group's committed offsets through a consumer of that group that never joins it
(`Consumer.committed`, an OffsetFetch), then AdminClient `list_offsets` earliest and latest.
Not AdminClient's `list_consumer_group_offsets`: librdkafka (2.16) aborts the whole process in
it when the group coordinator's connection drops mid-request ("rd_kafka_enq_once_del_source_return:
Assertion `eonce->refcnt > 0' failed", confluentinc/librdkafka#4605, fix pending in #5397), which
tests/test_cluster_faults.py hit in the monitor when it killed a broker.

Watermarks are right on Apache Kafka; the local fallback broker, Tansu, reports the latest offset
wrong (docs/local-broker.md), so lag read from it is wrong too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.kafka import broker_unavailable, client_config, consumer_config
from core.settings import Settings

# The `consumer` label: which kind of process a group is made of.
SCORER = "scorer"
QUEUE_WORKER = "queue_worker"
MONITOR = "monitor"

LAG_TIMEOUT_SECONDS = 10.0

Where = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class ConsumerGroup:
    consumer: str  # SCORER, QUEUE_WORKER or MONITOR
    group_id: str
    topics: tuple[str, ...]


def queue_group_id(settings: Settings) -> str:
    """The consumer group of the call queue's workers (streamer/queue_worker.py)."""
    return f"{settings.streamer_app_id}-queue"


def monitor_group_id(settings: Settings) -> str:
    """The group the monitor commits its progress to (it is not a member: monitor/worker.py)."""
    return f"{settings.streamer_app_id}-monitor"


def monitor_topics(settings: Settings) -> tuple[str, ...]:
    """What `callscore monitor` reads: the model topic, the prediction log, the outcomes."""
    return (settings.topic_models, settings.topic_predictions, settings.topic_outcomes)


def deployment_groups(settings: Settings) -> list[ConsumerGroup]:
    """The deployment's consumer groups and the topics each consumes."""
    return [
        ConsumerGroup(
            SCORER,
            settings.streamer_app_id,
            (settings.topic_prospects, settings.topic_outcomes, settings.topic_do_not_call),
        ),
        ConsumerGroup(QUEUE_WORKER, queue_group_id(settings), (settings.topic_queue_inputs,)),
        ConsumerGroup(MONITOR, monitor_group_id(settings), monitor_topics(settings)),
    ]


@dataclass(frozen=True)
class Watermarks:
    low: int  # the partition's first offset still kept
    high: int  # the offset its next record will get


@dataclass(frozen=True)
class PartitionLag:
    consumer: str
    group_id: str
    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing here
    low: int
    high: int

    @property
    def lag(self) -> int:
        return partition_lag(self.committed, self.low, self.high)


def partition_lag(committed: int | None, low: int, high: int) -> int:
    """Records of a partition the group has still to read: high - committed; from the low
    watermark when nothing is committed or the committed offset is no longer kept; never
    negative (a committed offset read after the watermark may pass it)."""
    start = low if committed is None else max(committed, low)
    return max(high - start, 0)


def group_lag(
    group: ConsumerGroup,
    watermarks: Mapping[Where, Watermarks],
    committed: Mapping[Where, int],
) -> list[PartitionLag]:
    """Each partition of the group's topics (those in `watermarks`), with the group's committed
    offset there (absent from `committed`: none), in topic and partition order."""
    return [
        PartitionLag(
            group.consumer,
            group.group_id,
            topic,
            partition,
            committed.get((topic, partition)),
            marks.low,
            marks.high,
        )
        for (topic, partition), marks in sorted(watermarks.items())
        if topic in group.topics
    ]


class LagReader:
    """Reads the lag of consumer groups with one AdminClient and one idle consumer per group,
    kept for the reader's life (`close` ends them)."""

    def __init__(self, settings: Settings, timeout: float = LAG_TIMEOUT_SECONDS) -> None:
        from confluent_kafka.admin import AdminClient

        self._settings = settings
        self._admin = AdminClient(client_config(settings))
        self._servers = settings.bootstrap_servers
        self._timeout = timeout
        self._group_readers: dict[str, Any] = {}

    def close(self) -> None:
        for consumer in self._group_readers.values():
            consumer.close()
        self._group_readers.clear()

    def read(self, groups: Sequence[ConsumerGroup]) -> list[PartitionLag]:
        """Every partition of the groups' existing topics, group by group. The committed offsets
        are asked for before the watermarks, so a lag is never below the truth. The broker not
        answering raises BrokerUnavailableError."""
        from confluent_kafka import KafkaException

        try:
            partitions = self._partitions({t for g in groups for t in g.topics})
            committed = {
                g.group_id: self._committed(g.group_id, [w for w in partitions if w[0] in g.topics])
                for g in groups
            }
            watermarks = self._watermarks(partitions)
        except (KafkaException, TimeoutError) as exc:
            self._admin.poll(0)  # hands the client's queued log lines to the logger
            error: Any = exc.args[0] if exc.args else None
            reason = error.str() if hasattr(error, "str") else str(exc) or "no answer in time"
            raise broker_unavailable(
                self._servers, f"when asked for consumer lag ({reason})"
            ) from None
        return [lag for g in groups for lag in group_lag(g, watermarks, committed[g.group_id])]

    def _partitions(self, topics: Iterable[str]) -> list[Where]:
        metadata = self._admin.list_topics(timeout=self._timeout)
        found: list[Where] = []
        for topic in sorted(topics):
            meta = metadata.topics.get(topic)
            if meta is not None and meta.error is None:
                found.extend((topic, p) for p in sorted(meta.partitions))
        return found

    def _committed(self, group_id: str, partitions: Sequence[Where]) -> dict[Where, int]:
        if not partitions:
            return {}
        if group_id not in self._group_readers:
            self._group_readers[group_id] = group_reader(self._settings, group_id)
        return read_committed(self._group_readers[group_id], partitions, self._timeout)

    def _watermarks(self, partitions: Sequence[Where]) -> dict[Where, Watermarks]:
        from confluent_kafka.admin import OffsetSpec

        low = self._offsets(partitions, OffsetSpec.earliest())
        high = self._offsets(partitions, OffsetSpec.latest())
        return {w: Watermarks(low[w], high[w]) for w in partitions}

    def _offsets(self, partitions: Sequence[Where], spec: Any) -> dict[Where, int]:
        from confluent_kafka import TopicPartition

        if not partitions:
            return {}
        futures = self._admin.list_offsets(
            {TopicPartition(t, p): spec for t, p in partitions}, request_timeout=self._timeout
        )
        return {
            (tp.topic, tp.partition): future.result(timeout=self._timeout * 2).offset
            for tp, future in futures.items()
        }


def group_reader(settings: Settings, group_id: str) -> Any:
    """A consumer of `group_id` that only asks for its committed offsets: it never subscribes,
    so it never joins the group nor moves a partition of its members."""
    from confluent_kafka import Consumer

    return Consumer(consumer_config(settings, group_id, **{"enable.auto.offset.store": False}))


def read_committed(consumer: Any, partitions: Sequence[Where], timeout: float) -> dict[Where, int]:
    """The group's committed offset per partition (none committed: left out)."""
    from confluent_kafka import TopicPartition

    answer = consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=timeout)
    return committed_offsets(answer)


def committed_offsets(answer: Iterable[Any]) -> dict[Where, int]:
    """Committed offsets as TopicPartitions, as each partition's committed offset; a partition
    without one (offset below 0, OFFSET_INVALID) is left out. A partition answered with an
    error raises KafkaException."""
    from confluent_kafka import KafkaException

    found = {}
    for tp in answer:
        if tp.error is not None:
            raise KafkaException(tp.error)
        if tp.offset >= 0:
            found[(tp.topic, tp.partition)] = tp.offset
    return found
