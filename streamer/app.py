"""The Faust scoring service: prospects in, call tasks per priority tier and dead letters out.

At-least-once, by construction:
- values are consumed as raw bytes (value_serializer="raw") and validated in streamer.batch with
  the schemas contracts, so a bad message can never crash Faust's deserializer or end the
  `take()` agent;
- `stream.take_events()` acks a batch's input events only when the agent asks for the next batch;
  the agent asks only after the broker has acknowledged every output of the batch
  (`faust_workarounds.send_all` awaits each send's future, producer acks=all), and Faust commits
  only acked offsets (contiguously);
- a batch whose sends fail because the broker is away (an aiokafka KafkaError) is sent again,
  whole, with exponential backoff (capped at Settings.broker_retry_max_backoff_seconds) for up to
  Settings.broker_retry_seconds; its events stay unacked meanwhile, so nothing is committed past
  them. Sending a record twice is harmless: the task id is a function of the event id;
- if a batch fails for good (any other error, the retry budget spent, or the worker stopped
  mid-batch), `faust_workarounds.abandon_batch` marks
  its events acked *without* recording them as committable, so this process can never commit
  past them; the worker crashes and the events are redelivered to the next owner of the partition;
- Faust's exactly-once is not used (broken on Tansu, buggy upstream). A redelivered event keeps
  its task id (uuid5 of event_id); repeats within Settings.dedupe_window are dropped and counted.

Accounting per batch: consumed = scored + dead-lettered + duplicates dropped, an invariant of
`streamer.batch.BatchResult`; StreamMetrics.record_scored/record_published count it.

With the call queue (Settings.queue_enabled), the scoring agent's output is each event's
prediction record on the queue's input topic; two routing agents bring outcomes and do-not-call
records there too (streamer/routing.py), under the same at-least-once rules; the queue worker,
in a child process (streamer/queue_process.py), owns the queue's partitions and publishes the
tasks. The dialer-facing HTTP (/score, /model, /queue, claims) is `callscore api`'s
(streamer/api.py); the scorer serves /healthz, /readyz and /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mode
from aiokafka.errors import KafkaError
from faust.types import EventT

from core.kafka import faust_broker_kwargs
from core.kafka_logs import (
    SERVICE_BURST,
    SERVICE_LINES_PER_SECOND,
    RateLimitFilter,
    limit_kafka_logs,
)
from core.settings import Settings
from core.topic_follower import TopicFollower
from core.topic_writer import Outgoing
from streamer.batch import BatchResult, BatchScorer
from streamer.broker_check import BrokerCheck
from streamer.dedupe import RecentIds
from streamer.faust_workarounds import StreamApp, abandon_batch, send_all
from streamer.metrics import StreamMetrics
from streamer.model_watcher import ModelWatcher
from streamer.queue_process import QueueProcess
from streamer.retry import retry_with_backoff
from streamer.routing import RouteResult, route_do_not_call, route_outcomes
from streamer.scoring import Incoming
from streamer.web import ApiOnlyWeb, ServiceHandlers, register_routes

log = logging.getLogger(__name__)

MODEL_WAIT_POLL_SECONDS = 0.05
QUEUE_WATCH_SECONDS = 1.0


@dataclass
class Streamer:
    """What one replica holds besides the Faust app: settings, model, batch scorer, metrics."""

    settings: Settings
    app: StreamApp
    metrics: StreamMetrics
    watcher: ModelWatcher
    recent: RecentIds
    broker: BrokerCheck
    scorer: BatchScorer = field(init=False)
    queue: QueueProcess | None = None  # the call queue's writer (Settings.queue_enabled)

    def __post_init__(self) -> None:
        self.scorer = BatchScorer(self.settings, self.recent)

    def start_queue(self, level: int) -> None:
        """The call queue's process, started before the Faust worker (QueueProcess.start)."""
        if self.queue is not None:
            self.queue.start(level)

    def readiness(self) -> dict[str, bool]:
        prospects = self.settings.topic_prospects
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # consumer not started yet
            assignment = set()
        assigned = any(tp.topic == prospects for tp in assignment) and not self.app.rebalancing
        if self.queue is not None:  # its group may have no partition for us: that is fine
            assigned = assigned and self.queue.assigned.is_set()
        return {
            "partitions_assigned": assigned,
            "model_loaded": self.watcher.current is not None,
            "broker_reachable": self.broker.reachable,
        }

    async def wait_for_model(self) -> None:
        if self.watcher.current is None:
            log.info("no model yet: prospects wait in Kafka until one is published")
        while self.watcher.current is None:
            await asyncio.sleep(MODEL_WAIT_POLL_SECONDS)

    async def process(self, events: Sequence[EventT]) -> None:
        """Score one batch and return once the broker acknowledged all of its outputs."""
        model = self.watcher.current  # read once: the whole batch is scored by this version
        assert model is not None
        result = self.scorer.score([incoming(e) for e in events], model, datetime.now(UTC))
        self.metrics.record_scored(result)
        await self.publish(result.outgoing)
        self.metrics.record_published(result, acked_at=time.time())
        log_outcome(result)

    async def publish(self, outgoing: Sequence[Outgoing]) -> None:
        """send_all, again with backoff while the broker is away, within the retry budget."""
        settings = self.settings

        def on_retry(failed: int, exc: BaseException, delay: float) -> None:
            self.metrics.send_retries.inc()
            log.warning(
                "batch of %d outputs not acknowledged (%s: %s); attempt %d in %.1f s",
                len(outgoing),
                type(exc).__name__,
                exc,
                failed + 1,
                delay,
            )

        attempts = await retry_with_backoff(
            lambda: send_all(self.app, outgoing),
            budget_seconds=settings.broker_retry_seconds,
            max_backoff_seconds=settings.broker_retry_max_backoff_seconds,
            retry_on=(KafkaError,),
            on_retry=on_retry,
        )
        if attempts > 1:
            log.info("batch of %d outputs acknowledged at attempt %d", len(outgoing), attempts)


def incoming(event: EventT) -> Incoming:
    m = event.message
    return Incoming(m.key, m.value, m.topic, m.partition, m.offset, m.timestamp)


def log_outcome(result: BatchResult) -> None:
    for letter in result.dead_letters:
        log.warning(
            "dead letter %s[%d]@%d: %s",
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
            letter.message,
        )
    if result.duplicates:
        log.info("dropped %d repeated event ids (dedupe window)", result.duplicates)


def use_uvloop() -> None:
    """Run the worker (and Faust's consumer thread, which makes its own loop) on uvloop.

    Sets the process's event loop policy, so call it before the worker's loop exists; mode's
    own switch (`mode.loop.use`). Measured in docs/streamer.md (Performance).
    """
    import mode.loop

    mode.loop.use("uvloop")


def build_app(settings: Settings) -> Streamer:
    use_uvloop()
    metrics = StreamMetrics()
    watcher = ModelWatcher(settings, metrics)
    broker = BrokerCheck(settings, metrics)
    app = new_faust_app(settings)
    streamer = Streamer(settings, app, metrics, watcher, RecentIds(settings.dedupe_window), broker)
    limiter = RateLimitFilter(SERVICE_LINES_PER_SECOND, SERVICE_BURST)
    limit_kafka_logs(limiter)
    app.service(thread_service(watcher))
    app.service(broker_check_service(broker, limiter))
    add_scoring_agent(streamer)
    if settings.queue_enabled:
        queue = QueueProcess(settings, metrics)
        streamer.queue = queue
        app.service(queue_worker_service(queue))
        add_routing_agents(streamer)
    # The dialer-facing routes are `callscore api`'s (streamer/api.py): a /score load there
    # costs the stream nothing but CPU (bench/README.md, "Dialer API, claims and latency").
    register_routes(app, ServiceHandlers(settings, metrics, streamer.readiness))
    return streamer


class ScorerApp(StreamApp):
    """Serves only the routes of streamer.web (see ApiOnlyWeb)."""

    def _new_web(self) -> ApiOnlyWeb:
        return ApiOnlyWeb(self)


def new_faust_app(settings: Settings) -> StreamApp:
    return ScorerApp(
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


def thread_service(component: TopicFollower) -> type[mode.Service]:
    class ThreadService(mode.Service):
        """Runs a follower's thread (the model watcher) as long as the worker runs."""

        async def on_start(self) -> None:
            component.start()

        async def on_stop(self) -> None:
            await asyncio.get_running_loop().run_in_executor(None, component.stop)

    return ThreadService


def broker_check_service(broker: BrokerCheck, limiter: RateLimitFilter) -> type[mode.Service]:
    class BrokerCheckService(mode.Service):
        """Runs the broker check for as long as the worker runs."""

        async def on_start(self) -> None:
            limit_kafka_logs(limiter)  # again: loggers of modules imported since build_app
            broker.start()

        async def on_stop(self) -> None:
            await asyncio.get_running_loop().run_in_executor(None, broker.stop)

    return BrokerCheckService


def queue_worker_service(queue: QueueProcess) -> type[mode.Service]:
    class QueueWorkerService(mode.Service):
        """Watches the call queue's process (started before the worker, `Streamer.start_queue`):
        stops the worker when the queue gave up, so its partitions go to another replica, and
        stops the queue with the worker (streamer/queue_process.py)."""

        @mode.Service.task
        async def _watch(self) -> None:
            while not self.should_stop:
                if queue.failure is not None:
                    log.error("the call queue failed: stopping this scorer")
                    await self.crash(queue.failure)
                    return
                await self.sleep(QUEUE_WATCH_SECONDS)

        async def on_stop(self) -> None:
            await asyncio.get_running_loop().run_in_executor(None, queue.stop)

    return QueueWorkerService


def add_routing_agents(streamer: Streamer) -> None:
    """Outcomes and do-not-call records to their prospect's queue partition (streamer/routing.py),
    committed only once the broker acknowledged what they became."""
    app, settings = streamer.app, streamer.settings

    def route(topic: str, name: str, router: Callable[[Sequence[Incoming]], RouteResult]) -> None:
        @app.agent(app.topic(topic), name=name)
        async def agent(stream: Any) -> None:
            batches = stream.take_events(
                settings.batch_max_size, within=settings.batch_max_wait_seconds
            )
            async for events in batches:
                try:
                    result = router([incoming(e) for e in events])
                    await streamer.publish(result.outgoing)
                    streamer.metrics.record_routed(topic, result)
                except BaseException as exc:
                    await abandon_batch(app, events, exc)
                    raise

    route(settings.topic_outcomes, "route-outcomes", lambda r: route_outcomes(r, settings))
    route(
        settings.topic_do_not_call,
        "route-do-not-call",
        lambda r: route_do_not_call(r, settings, datetime.now(UTC)),
    )


def add_scoring_agent(streamer: Streamer) -> None:
    app, settings = streamer.app, streamer.settings

    @app.agent(app.topic(settings.topic_prospects), name="score-prospects")
    async def score_prospects(stream: Any) -> None:
        await streamer.wait_for_model()
        batches = stream.take_events(
            settings.batch_max_size, within=settings.batch_max_wait_seconds
        )
        async for events in batches:
            try:
                await streamer.process(events)
            except BaseException as exc:
                await abandon_batch(app, events, exc)
                raise
