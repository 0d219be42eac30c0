"""A confluent-kafka loop, no framework: consume a batch -> work -> produce, flushed.

With `passthrough` it is ceiling 2 (the `confluent_loop` scenario): each event JSON-decoded and
sent twice, the same work per event as the Faust pass-through (scenarios/passthrough.py). With
`score` it is the batch-native scorer (the `native_loop` scenario): `streamer.batch.BatchScorer`
on each batch with the model published on the model topic (verified as the scorer does), i.e. the
scorer's work without Faust. It writes what BatchScorer writes under its Settings: the suite runs
it with queue_enabled=False (a call task and a prediction-log line per event; with the queue it
would be one queue input per event, and no call task without the queue's process).

Either way, the scorer's guarantees: a batch of up to batch_max_size events (waiting at most
batch_max_wait_seconds), its outputs flushed (acks=all, the project's producer_config) before the
next batch, offsets committed every commit_interval_seconds. One process reads every partition,
so it assigns them itself (no group membership to wait for) once the bench says go
(scenarios/gate.py). On SIGTERM it writes its batch count to STATS_FILE (JSON).

    python -m bench.scenarios.kafka_loop passthrough|score READY_FILE GO_FILE STATS_FILE
    # configured by CALLSCORE_* variables
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from bench.scenarios.gate import POLL_SECONDS, Gate
from bench.scenarios.passthrough import outputs
from core.kafka import consumer_config, producer_config
from core.settings import Settings, load_settings

# (topic, key, value, headers) of one record to produce.
Record = tuple[str, bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]
# A batch of consumed messages -> the records to produce for them.
Work = Callable[[list[Message]], list[Record]]


def passthrough(settings: Settings) -> Work:
    def work(messages: list[Message]) -> list[Record]:
        return [
            (topic, key, value, [])
            for m in messages
            for topic, key, value in outputs(settings, m.key(), m.value())
        ]

    return work


def score(settings: Settings) -> Work:
    """BatchScorer.score with the champion of the model topic (loaded after the go, as the
    scorer loads the model the bench publishes after its partitions are held). The scorer's
    modules are imported here only: the pass-through needs none of them."""
    from registry.model_topic import load_champion, read_model_records
    from streamer.batch import BatchScorer
    from streamer.dedupe import RecentIds
    from streamer.scoring import Incoming, ServedModel

    champion = load_champion(settings, read_model_records(settings))
    if champion is None:
        raise SystemExit(f"no model on {settings.topic_models}: the bench publishes one first")
    manifest, artifact = champion
    model = ServedModel(artifact, manifest, 0, datetime.now(UTC))
    scorer = BatchScorer(settings, RecentIds(settings.dedupe_window))

    def work(messages: list[Message]) -> list[Record]:
        records = [
            Incoming(m.key(), m.value(), str(m.topic()), m.partition() or 0, m.offset() or 0)
            for m in messages
        ]
        outgoing = scorer.score(records, model, datetime.now(UTC)).outgoing
        return [(o.topic, o.key, o.value, list(o.headers)) for o in outgoing]

    return work


WORK: dict[str, Callable[[Settings], Work]] = {"passthrough": passthrough, "score": score}


def main() -> None:
    mode, ready, go, stats_file = sys.argv[1:5]
    settings = load_settings()
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    gate = Gate.from_args([ready, go])
    consumer = Consumer(consumer_config(settings, settings.streamer_app_id))
    producer = Producer(producer_config(settings))
    topic = settings.topic_prospects
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    gate.ready.touch()
    while not gate.go.exists() and not stopping:
        time.sleep(POLL_SECONDS)
    work = WORK[mode](settings)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    next_commit = time.monotonic() + settings.commit_interval_seconds
    batches = consumed = 0
    try:
        while not stopping:
            messages = consumer.consume(
                num_messages=settings.batch_max_size, timeout=settings.batch_max_wait_seconds
            )
            valid = [m for m in messages if m.error() is None]
            if valid:
                for out_topic, key, value, headers in work(valid):
                    producer.produce(out_topic, key=key, value=value, headers=headers)
                unsent = producer.flush(30)
                if unsent:
                    raise RuntimeError(f"{unsent} outputs not acknowledged")
                batches += 1
                consumed += len(valid)
            if time.monotonic() >= next_commit:
                next_commit = time.monotonic() + settings.commit_interval_seconds
                # Raises when nothing was consumed yet: there is nothing to commit then.
                with contextlib.suppress(KafkaException):
                    consumer.commit(asynchronous=True)
    finally:
        consumer.close()
        Path(stats_file).write_text(json.dumps({"batches": batches, "consumed": consumed}))


if __name__ == "__main__":
    main()
