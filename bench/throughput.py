"""Throughput scenarios on a backlog: the two ceilings (no scoring) and the scorer (production
model, small model, two workers, one event per predict_proba). Each gets fresh topics, the same
payloads and Settings, and is measured by bench.outputs.drain."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from bench.context import Context, instance_name, publish
from bench.gate import Gate
from bench.outputs import drain
from bench.passthrough import output_topics
from bench.resources import CpuWindow, peak_rss_mb
from callscore.processes import Child, settings_env
from registry.artifact import ModelArtifact
from testkit.harness import StreamWorker, produce, worker_settings

# Generous: the per-event peer on a busy machine is the slowest.
DRAIN_TIMEOUT_SECONDS = 600.0
ASSIGNMENT_TIMEOUT_SECONDS = 90.0
# After every worker reports its partitions, a moment for a late rebalance to show.
ASSIGNMENT_SETTLE_SECONDS = 1.0


def ceiling(ctx: Context, module: str, name: str) -> dict[str, Any]:
    """A pass-through process (bench.faust_passthrough or bench.kafka_loop) on the backlog."""
    settings = ctx.settings(name)
    events = ctx.payloads.events(name, ctx.options.backlog)
    produce(settings, events.records())
    unique = instance_name(settings, "consumer")
    configured = worker_settings(settings, ctx.workdir, unique)
    gate = Gate.in_dir(ctx.workdir, unique)
    process = Child.start(
        unique,
        [sys.executable, "-m", module, *gate.args()],
        ctx.log_path(unique),
        settings_env(configured),
    )
    try:
        gate.wait_ready(ASSIGNMENT_TIMEOUT_SECONDS, process.check_alive)
        time.sleep(ASSIGNMENT_SETTLE_SECONDS)
        cpu = CpuWindow({"consumer": process.process.pid, "broker": ctx.broker_pid})
        cpu.start()
        gate.go.touch()
        result = drain(
            settings,
            [output_topics(settings)[0]],
            events.ids,
            cpu,
            process.check_alive,
            DRAIN_TIMEOUT_SECONDS,
        )
        result["peak_rss_mb"] = [peak_rss_mb(process.process.pid)]
    finally:
        process.stop()
    return result


def faust_passthrough(ctx: Context) -> dict[str, Any]:
    return ceiling(ctx, "bench.faust_passthrough", "faust-passthrough")


def confluent_loop(ctx: Context) -> dict[str, Any]:
    return ceiling(ctx, "bench.kafka_loop", "confluent-loop")


def scorer(
    ctx: Context,
    name: str,
    artifact: ModelArtifact,
    events_count: int,
    workers: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    """`callscore stream` worker(s) on the backlog. The model is published only once every worker
    holds its partitions, so that two workers start together, with no rebalance mid-backlog."""
    settings = ctx.settings(name, **extra)
    events = ctx.payloads.events(name, events_count)
    produce(settings, events.records())
    started: list[StreamWorker] = []
    try:
        for i in range(workers):
            started.append(ctx.worker(settings, f"w{i}"))
        for worker in started:
            worker.wait_until(
                partitions_assigned(worker), ASSIGNMENT_TIMEOUT_SECONDS, "partitions assigned"
            )
        time.sleep(ASSIGNMENT_SETTLE_SECONDS)
        pids = {f"worker-{i}": w.process.pid for i, w in enumerate(started)}
        cpu = CpuWindow({**pids, "broker": ctx.broker_pid})
        cpu.start()  # model loading included: a one-off cost, small beside a backlog

        def check_alive() -> None:
            for worker in started:
                if worker.process.poll() is not None:
                    raise RuntimeError(f"worker exited:\n{worker.log()}")

        publish(settings, artifact)
        result = drain(
            settings,
            list(settings.task_topics.values()),
            events.ids,
            cpu,
            check_alive,
            DRAIN_TIMEOUT_SECONDS,
        )
        result["model"] = f"{artifact.metadata.candidate} ({type(artifact.pipeline).__name__})"
        result["workers"] = workers
        result["batch_max_size"] = settings.batch_max_size
        result["consumed_per_worker"] = [
            int(w.metric("callscore_events_consumed_total")) for w in started
        ]
        batches = sum(w.metric("callscore_batch_size_count") for w in started)
        batched = sum(w.metric("callscore_batch_size_sum") for w in started)
        scoring = sum(w.metric("callscore_scoring_duration_seconds_sum") for w in started)
        result["mean_batch_size"] = round(batched / batches, 1) if batches else None
        # Frame building + predict_proba per batch, and their share of the measured span.
        result["scoring_ms_per_batch"] = round(scoring * 1000 / batches, 2) if batches else None
        span = result["span_seconds"]
        result["scoring_share_of_span"] = round(scoring / workers / span, 3) if span else None
        result["peak_rss_mb"] = [peak_rss_mb(w.process.pid) for w in started]
    finally:
        for worker in started:
            worker.stop()
    return result


def partitions_assigned(worker: StreamWorker) -> Callable[[], bool]:
    return lambda: worker.readiness().get("partitions_assigned") is True


def scorer_production(ctx: Context) -> dict[str, Any]:
    return scorer(ctx, "scorer-production", ctx.production, ctx.options.backlog)


def scorer_small(ctx: Context) -> dict[str, Any]:
    return scorer(ctx, "scorer-small", ctx.small, ctx.options.backlog)


def scorer_two_workers(ctx: Context) -> dict[str, Any]:
    return scorer(ctx, "scorer-two-workers", ctx.production, ctx.options.backlog, workers=2)


def per_event(ctx: Context) -> dict[str, Any]:
    """The naive peer: the same worker with batch_max_size=1, so every batch is one event and
    every event one predict_proba call (streamer.batch.BatchScorer.score -> score_events)."""
    return scorer(ctx, "per-event", ctx.production, ctx.options.per_event_backlog, batch_max_size=1)
