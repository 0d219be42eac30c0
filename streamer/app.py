"""The Faust scoring service: prospects in, call tasks per priority tier and dead letters out.

At-least-once, by construction:
- values are consumed as raw bytes (value_serializer="raw") and validated here with the schemas
  contracts, so a bad message can never crash Faust's deserializer or end the `take()` agent;
- `stream.take_events()` acks a batch's input events only when the agent asks for the next batch;
  the agent asks only after the broker has acknowledged every output of the batch (each send's
  future is awaited, producer acks=all), and Faust commits only acked offsets (contiguously);
- if a batch fails (or the worker is stopped mid-batch), its events are marked acked *without*
  being recorded as committable, so this process can never commit past them; the worker crashes
  and the events are redelivered to the next owner of the partition;
- Faust's exactly-once is not used (broken on Tansu, buggy upstream). A redelivered event keeps
  its task id (uuid5 of event_id); repeats within Settings.dedupe_window are dropped and counted.

Accounting per batch: consumed = scored + dead-lettered + duplicates dropped, all in metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mode
from faust.types import EventT

from core.kafka import faust_broker_kwargs
from core.settings import Settings
from streamer.dedupe import RecentIds
from streamer.metrics import StreamMetrics
from streamer.models import ModelWatcher
from streamer.scoring import Incoming, decode_batch, score_events
from streamer.transport import StreamApp
from streamer.web import register_routes

log = logging.getLogger(__name__)

MODEL_WAIT_POLL_SECONDS = 0.05


@dataclass
class Streamer:
    """What one replica holds besides the Faust app: settings, model, dedupe window, metrics."""

    settings: Settings
    app: StreamApp
    metrics: StreamMetrics
    watcher: ModelWatcher
    recent: RecentIds

    def readiness(self) -> dict[str, bool]:
        prospects = self.settings.topic_prospects
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # consumer not started yet
            assignment = set()
        assigned = any(tp.topic == prospects for tp in assignment) and not self.app.rebalancing
        return {"partitions_assigned": assigned, "model_loaded": self.watcher.current is not None}


def build_app(settings: Settings) -> Streamer:
    metrics = StreamMetrics()
    watcher = ModelWatcher(settings, metrics)
    app = StreamApp(
        settings.streamer_app_id,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        **faust_broker_kwargs(settings),
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(settings.streamer_data_dir),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        stream_publish_on_commit=False,
        stream_wait_empty=False,
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000.0,
        broker_commit_interval=settings.commit_interval_seconds,
        web_enabled=True,
        web_bind=settings.http_host,
        web_port=settings.http_port,
    )
    streamer = Streamer(settings, app, metrics, watcher, RecentIds(settings.dedupe_window))
    prospects = app.topic(settings.topic_prospects)

    @app.service
    class ModelWatcherService(mode.Service):
        """Runs the watcher thread for as long as the worker runs."""

        async def on_start(self) -> None:
            watcher.start()

        async def on_stop(self) -> None:
            await asyncio.get_running_loop().run_in_executor(None, watcher.stop)

    async def wait_for_model() -> None:
        if watcher.current is None:
            log.info("no model yet: prospects wait in Kafka until one is published")
        while watcher.current is None:
            await asyncio.sleep(MODEL_WAIT_POLL_SECONDS)

    async def process(events: Sequence[EventT]) -> None:
        model = watcher.current  # read once: the whole batch is scored by this version
        assert model is not None
        now = datetime.now(UTC)
        incoming = [
            Incoming(
                key=e.message.key,
                value=e.message.value,
                topic=e.message.topic,
                partition=e.message.partition,
                offset=e.message.offset,
                timestamp=e.message.timestamp,
            )
            for e in events
        ]
        metrics.consumed.inc(len(incoming))
        metrics.batch_size.observe(len(incoming))
        valid, dead = decode_batch(incoming, settings.max_message_bytes, now)
        fresh = [(m, ev) for m, ev in valid if not streamer.recent.seen(ev.event_id)]
        duplicates = len(valid) - len(fresh)
        started = time.perf_counter()
        tasks = score_events([ev for _, ev in fresh], model, now)
        metrics.scoring_seconds.observe(time.perf_counter() - started)

        # Straight to the producer: Topic.send's per-message bookkeeping (FutureMessage,
        # callbacks, serializers) cost more than the scoring itself. Each call only enqueues
        # the record and returns the broker acknowledgement's future.
        send = app.producer.send
        pending: list[Awaitable[Any]] = []
        for (_m, event), task in zip(fresh, tasks, strict=True):
            headers = [
                ("model_version", str(task.model_version).encode()),
                ("task_id", task.task_id.encode()),
            ]
            value = task.model_dump_json().encode()
            topic = settings.task_topics[task.priority]
            pending.append(
                await send(topic, event.prospect_id.encode(), value, None, None, headers)
            )
        for letter in dead:
            headers = [("error_kind", letter.error_kind.encode())]
            value = letter.model_dump_json().encode()
            topic = settings.topic_dead_letters
            pending.append(await send(topic, letter.key, value, None, None, headers))
        await asyncio.gather(*pending)  # every output acknowledged by the broker (acks=all)
        acked_at = time.time()
        metrics.scored.inc(len(tasks))
        for task in tasks:
            metrics.tasks.labels(task.priority).inc()
        for letter in dead:
            metrics.dead_lettered.labels(letter.error_kind).inc()
            log.warning(
                "dead letter %s[%d]@%d: %s",
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
                letter.message,
            )
        if duplicates:
            metrics.duplicates.inc(duplicates)
            log.info("dropped %d repeated event ids (dedupe window)", duplicates)
        for message, _event in fresh:
            if message.timestamp:
                metrics.latency_seconds.observe(max(acked_at - message.timestamp, 0.0))

    @app.agent(prospects, name="score-prospects")
    async def score_prospects(stream: Any) -> None:
        await wait_for_model()
        batches = stream.take_events(
            settings.batch_max_size, within=settings.batch_max_wait_seconds
        )
        async for events in batches:
            try:
                await process(events)
            except BaseException as exc:
                # Never let take_events() ack these: mark them acked without recording their
                # offsets, so no commit can pass them; the next owner re-reads them.
                for event in events:
                    event.message.acked = True
                if not isinstance(exc, asyncio.CancelledError | GeneratorExit):
                    log.critical(
                        "batch of %d events could not be scored and published (%s: %s); "
                        "stopping this worker without committing them",
                        len(events),
                        type(exc).__name__,
                        exc,
                    )
                    await app.crash(exc)
                raise

    register_routes(app, settings, metrics, lambda: watcher.current, streamer.readiness)
    return streamer
