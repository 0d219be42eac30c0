"""Ceiling 2: confluent-kafka consume -> JSON decode -> produce, no framework, no scoring.

Same work per event as the Faust pass-through (bench/passthrough.py) and the same guarantees as
the scorer: a batch of up to batch_max_size events (waiting at most batch_max_wait_seconds), its
outputs flushed (acks=all, the project's producer_config) before the next batch, offsets
committed every commit_interval_seconds. One process reads every partition, so it assigns them
itself (no group membership to wait for) once the bench says go (bench/gate.py).

    python -m bench.kafka_loop READY_FILE GO_FILE   # configured by CALLSCORE_* variables
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from types import FrameType

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from bench.gate import POLL_SECONDS, Gate
from bench.passthrough import outputs
from core.kafka import consumer_config, producer_config
from core.settings import load_settings


def main() -> None:
    settings = load_settings()
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    gate = Gate.from_args(sys.argv[1:3])
    consumer = Consumer(consumer_config(settings, settings.streamer_app_id))
    producer = Producer(producer_config(settings))
    topic = settings.topic_prospects
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    gate.ready.touch()
    while not gate.go.exists() and not stopping:
        time.sleep(POLL_SECONDS)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    next_commit = time.monotonic() + settings.commit_interval_seconds
    try:
        while not stopping:
            messages = consumer.consume(
                num_messages=settings.batch_max_size, timeout=settings.batch_max_wait_seconds
            )
            for message in messages:
                if message.error() is not None:
                    continue
                for topic, key, value in outputs(settings, message.key(), message.value()):
                    producer.produce(topic, key=key, value=value)
            if messages:
                unsent = producer.flush(30)
                if unsent:
                    raise RuntimeError(f"{unsent} outputs not acknowledged")
            if time.monotonic() >= next_commit:
                next_commit = time.monotonic() + settings.commit_interval_seconds
                # Raises when nothing was consumed yet: there is nothing to commit then.
                with contextlib.suppress(KafkaException):
                    consumer.commit(asynchronous=True)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
