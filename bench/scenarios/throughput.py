"""Throughput scenarios on a backlog: the two ceilings (no scoring), the batch-native scorer
(confluent-kafka + BatchScorer, no Faust) and the scorer (production model with and without the
call queue, small model, two workers, one event per predict_proba). Each gets fresh topics, the
same payloads and Settings, and is measured by scenarios.backlog.drain while `Context.observe`
watches its consumers.

A scorer with the call queue (Settings.queue_enabled, the default) publishes its outputs from
the queue's process, the changelog last, once the batch's other records are acknowledged: the
bench drains that changelog (one record per event, the bench's prospects being distinct), so
the rate includes the queue stage. Without the queue it drains the tier topics as before.

The batch-native loop (`native_loop`) runs BatchScorer without the queue (queue_enabled=False):
with it, BatchScorer writes one queue input per event and no call task (the queue's process
writes those, and the loop has none), so it would produce half the ceilings' records per event
and measure neither the ceilings' work nor the scorer's. Without it, it writes what
`scorer_no_queue` writes, a call task and a prediction-log line per event, two records as the
ceilings do, and is drained on the tier topics like that scorer."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.context import Context, instance_name, publish
from bench.resources import peak_rss_mb, tree_peak_rss_mb
from bench.results import Backlog
from bench.scenarios.backlog import EventIdOf, drain, event_id_field, queue_entry_event
from bench.scenarios.gate import Gate
from bench.scenarios.passthrough import output_topics
from callscore.processes import Child, settings_env
from core.settings import Settings
from registry.artifact import ModelArtifact
from testkit.harness import StreamWorker, produce, worker_settings

ASSIGNMENT_TIMEOUT_SECONDS = 90.0
# After every worker reports its partitions, a moment for a late rebalance to show.
ASSIGNMENT_SETTLE_SECONDS = 1.0


def _model_name(artifact: ModelArtifact) -> str:
    return f"{artifact.metadata.candidate} ({type(artifact.pipeline).__name__})"


def gated(
    ctx: Context,
    name: str,
    module: str,
    mode: list[str],
    model: ModelArtifact | None = None,
    counts_batches: bool = False,
    **extra: Any,
) -> Backlog:
    """A gated process (scenarios/gate.py: faust_passthrough, kafka_loop) on the backlog;
    `model` published before it starts, for one that scores; one that `counts_batches` is given
    a file to write them to when it stops; `extra` Settings on top of the suite's."""
    settings = ctx.settings(name, **extra)
    events = ctx.payloads.events(name, ctx.options.backlog)
    produce(settings, events.records())
    if model is not None:
        publish(settings, model)
    unique = instance_name(settings, "consumer")
    configured = worker_settings(settings, ctx.workdir, unique)
    gate = Gate.in_dir(ctx.workdir, unique)
    stats = ctx.workdir / f"{unique}.stats.json"
    argv = [sys.executable, "-m", module, *mode, *gate.args()]
    if counts_batches:
        argv.append(str(stats))
    process = Child.start(unique, argv, ctx.log_path(unique), settings_env(configured))
    try:
        gate.wait_ready(ASSIGNMENT_TIMEOUT_SECONDS, process.check_alive)
        time.sleep(ASSIGNMENT_SETTLE_SECONDS)
        consumers = {"consumer": process.process.pid}
        cpu = ctx.cpu_window(consumers)
        with ctx.observe(name, consumers):
            cpu.start()
            gate.go.touch()
            topic = settings.task_topics.values() if model else [output_topics(settings)[0]]
            timeout = ctx.options.drain_timeout_seconds
            result = drain(settings, list(topic), events.ids, cpu, process.check_alive, timeout)
        result.peak_rss_mb = [peak_rss_mb(process.process.pid)]
    finally:
        process.stop()
    if counts_batches and stats.is_file():  # written when it stopped
        counted = json.loads(stats.read_text())
        result.mean_batch_size = round(counted["consumed"] / max(counted["batches"], 1), 1)
    if model is not None:
        result.model = _model_name(model)
        result.queue_enabled = settings.queue_enabled
    result.batch_max_size = settings.batch_max_size
    return result


def faust_passthrough(ctx: Context) -> Backlog:
    return gated(ctx, "faust-passthrough", "bench.scenarios.faust_passthrough", [])


def confluent_loop(ctx: Context) -> Backlog:
    return gated(
        ctx, "confluent-loop", "bench.scenarios.kafka_loop", ["passthrough"], counts_batches=True
    )


def native_loop(ctx: Context) -> Backlog:
    """The scorer's batch path without Faust: BatchScorer.score in the confluent-kafka loop,
    without the call queue (a task and a prediction-log line per event, as `scorer_no_queue`
    and the ceilings write two records per event; see the module's docstring)."""
    loop = "bench.scenarios.kafka_loop"
    return gated(
        ctx,
        "native-loop",
        loop,
        ["score"],
        ctx.production,
        counts_batches=True,
        queue_enabled=False,
    )


def scorer(
    ctx: Context,
    name: str,
    artifact: ModelArtifact,
    events_count: int,
    workers: int = 1,
    **extra: Any,
) -> Backlog:
    """`callscore stream` worker(s) on the backlog. The model is published only once every worker
    holds its partitions, so that two workers start together, with no rebalance mid-backlog."""
    settings = ctx.settings(name, **extra)
    events = ctx.payloads.events(name, events_count)
    topics, event_id_of = completion(settings, events.dicts)
    produce(settings, events.records())
    started: list[StreamWorker] = []
    try:
        for i in range(workers):
            started.append(ctx.worker(settings, f"w{i}"))
        for worker in started:
            worker.wait_until(
                partitions_assigned(worker), ASSIGNMENT_TIMEOUT_SECONDS, "partitions assigned"
            )
        if settings.queue_enabled:  # the queue's own group settles after the scorer's
            started[0].wait_until(
                queue_partitions_owned(started, settings.partitions),
                ASSIGNMENT_TIMEOUT_SECONDS,
                "every call-queue partition owned",
            )
        time.sleep(ASSIGNMENT_SETTLE_SECONDS)
        pids = {f"worker-{i}": w.process.pid for i, w in enumerate(started)}
        cpu = ctx.cpu_window(pids)

        def check_alive() -> None:
            for worker in started:
                if worker.process.poll() is not None:
                    raise RuntimeError(f"worker exited:\n{worker.log()}")

        with ctx.observe(name, pids):
            cpu.start()  # model loading included: a one-off cost, small beside a backlog
            publish(settings, artifact)
            timeout = ctx.options.drain_timeout_seconds
            result = drain(settings, topics, events.ids, cpu, check_alive, timeout, event_id_of)
        result.model = _model_name(artifact)
        result.workers = workers
        result.queue_enabled = settings.queue_enabled
        result.batch_max_size = settings.batch_max_size
        result.consumed_per_worker = [
            int(w.metric("callscore_events_consumed_total")) for w in started
        ]
        batches = sum(w.metric("callscore_batch_size_count") for w in started)
        batched = sum(w.metric("callscore_batch_size_sum") for w in started)
        scoring = sum(w.metric("callscore_scoring_duration_seconds_sum") for w in started)
        result.mean_batch_size = round(batched / batches, 1) if batches else None
        # Frame building + predict_proba per batch, and their share of the measured span.
        result.scoring_ms_per_batch = round(scoring * 1000 / batches, 2) if batches else None
        span = result.span_seconds
        result.scoring_share_of_span = round(scoring / workers / span, 3) if span else None
        result.peak_rss_mb = [tree_peak_rss_mb(w.process.pid) for w in started]
    finally:
        for worker in started:
            worker.stop()
    return result


def completion(settings: Settings, events: list[dict[str, Any]]) -> tuple[list[str], EventIdOf]:
    """The topics on which every event's last output appears, and how to read its event id."""
    if not settings.queue_enabled:
        return list(settings.task_topics.values()), event_id_field
    prospects = {e["prospect_id"] for e in events}
    if len(prospects) != len(events):
        # A repeated prospect's later event in the same batch shares one changelog record, and a
        # late one queues nothing: the drain would wait for outputs that never come.
        raise ValueError(
            f"the queue's drain needs one prospect per event: {len(prospects)} prospects for "
            f"{len(events)} events"
        )
    return [settings.topic_queue_state], queue_entry_event


def partitions_assigned(worker: StreamWorker) -> Callable[[], bool]:
    return lambda: worker.readiness().get("partitions_assigned") is True


def queue_partitions_owned(workers: list[StreamWorker], partitions: int) -> Callable[[], bool]:
    """Every partition of the call queue rebuilt by one of the workers (the queue's consumer
    group rebalances after the scorer's when a second worker joins)."""
    return lambda: sum(w.metric("callscore_queue_partitions") for w in workers) == partitions


def scorer_production(ctx: Context) -> Backlog:
    return scorer(ctx, "scorer-production", ctx.production, ctx.options.backlog)


def scorer_no_queue(ctx: Context) -> Backlog:
    """The production scorer as before the call queue: tier topics and prediction log written by
    the Faust agent itself; beside `scorer_production` (with the queue) in every round."""
    return scorer(ctx, "scorer-no-queue", ctx.production, ctx.options.backlog, queue_enabled=False)


def scorer_small(ctx: Context) -> Backlog:
    return scorer(ctx, "scorer-small", ctx.small, ctx.options.backlog)


def scorer_two_workers(ctx: Context) -> Backlog:
    return scorer(ctx, "scorer-two-workers", ctx.production, ctx.options.backlog, workers=2)


def per_event(ctx: Context) -> Backlog:
    """The naive peer: the same worker with batch_max_size=1, so every batch is one event and
    every event one predict_proba call (streamer.batch.BatchScorer.score -> score_events)."""
    return scorer(ctx, "per-event", ctx.production, ctx.options.per_event_backlog, batch_max_size=1)
