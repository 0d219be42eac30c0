"""Prometheus metrics of one scorer replica (base units, `_total` counters).

Each StreamMetrics owns its own CollectorRegistry, so tests can build several side by side.
Every per-batch update is in `record_scored` and `record_published`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

if TYPE_CHECKING:
    from streamer.batch import BatchResult
    from streamer.queue_worker import QueueProgress
    from streamer.routing import RouteResult

# What became of each input of the call queue (callqueue/rules.py), the `result` label.
QUEUE_RESULTS = (
    "queued",
    "late",
    "cooling_down",
    "suppressed",
    "duplicate",
    "below_floor",
    "closed",
    "recycled",
    "stale",
    "do_not_call",
    "lifted",
    "claims_granted",
    "claims_refused",
    "redelivered",
    "invalid",
)

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "callscore_events_consumed", "Prospect events taken from Kafka.", registry=r
        )
        self.scored = Counter(
            "callscore_events_scored", "Events scored and published as call tasks.", registry=r
        )
        self.dead_lettered = Counter(
            "callscore_events_dead_lettered",
            "Invalid events published to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "callscore_duplicates_dropped",
            "Events dropped because their event_id was seen within the dedupe window.",
            registry=r,
        )
        self.tasks = Counter(
            "callscore_tasks_produced",
            "Call tasks produced, by priority tier.",
            ["priority"],
            registry=r,
        )
        self.batch_size = Histogram(
            "callscore_batch_size", "Events per batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.scoring_seconds = Histogram(
            "callscore_scoring_duration_seconds",
            "Time of one batch's predict_proba (frame building included).",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.latency_seconds = Histogram(
            "callscore_end_to_end_latency_seconds",
            "Kafka timestamp of the event to the broker's acknowledgement of its task.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_version = Gauge(
            "callscore_model_version", "Version of the model being served (0: none).", registry=r
        )
        self.model_info = Info("callscore_model", "The model being served.", registry=r)
        self.reloads = Counter(
            "callscore_model_reloads",
            "Model manifests considered, by result (loaded, rejected) and reason.",
            ["result", "reason"],
            registry=r,
        )

        self.broker_reachable = Gauge(
            "callscore_broker_reachable",
            "1 if the broker answered the last metadata check, else 0 (streamer/broker_check.py).",
            registry=r,
        )
        self.queue_inputs = Counter(
            "callscore_queue_inputs",
            "Inputs of the call queue this replica applied, by what became of them.",
            ["result"],
            registry=r,
        )
        self.queue_superseded = Counter(
            "callscore_queue_superseded",
            "Queued tasks that replaced the prospect's open task.",
            registry=r,
        )
        self.queue_exhausted = Counter(
            "callscore_queue_attempts_exhausted",
            "Calls without a decision at the last attempt allowed (CALLSCORE_MAX_ATTEMPTS): "
            "closed, not retried.",
            registry=r,
        )
        self.queue_withdrawals = Counter(
            "callscore_queue_withdrawals",
            "Open tasks withdrawn from the call queue, by reason (closed, recycled, expired, "
            "suppressed).",
            ["reason"],
            registry=r,
        )
        self.queue_open_tasks = Gauge(
            "callscore_queue_open_tasks",
            "Open tasks in the partitions of the call queue this replica owns, by tier.",
            ["priority"],
            registry=r,
        )
        self.queue_entries = Gauge(
            "callscore_queue_entries",
            "Prospects the call queue keeps an entry for in this replica's partitions (memory: "
            "about 1-2 KB each); closed ones go after CALLSCORE_QUEUE_FORGET_AFTER_DAYS.",
            registry=r,
        )
        self.queue_forgotten = Counter(
            "callscore_queue_forgotten",
            "Entries of closed prospects the call queue forgot (CALLSCORE_QUEUE_FORGET_AFTER_DAYS "
            "past their newest event and cooling-down).",
            registry=r,
        )
        self.queue_partitions = Gauge(
            "callscore_queue_partitions",
            "Partitions of the call queue this replica owns.",
            registry=r,
        )
        self.queue_recovery_seconds = Gauge(
            "callscore_queue_recovery_seconds",
            "Time the last partition took to rebuild from the queue's changelog.",
            registry=r,
        )
        self.routed = Counter(
            "callscore_queue_routed",
            "Outcomes and do-not-call records routed to their prospect's queue partition, by "
            "topic and result (routed, invalid).",
            ["source", "result"],
            registry=r,
        )
        self.send_retries = Counter(
            "callscore_batch_send_retries",
            "Times a batch's outputs were sent again because the broker did not acknowledge them.",
            registry=r,
        )

    def record_scored(self, batch: BatchResult) -> None:
        """A batch was taken and scored; its outputs are not sent yet.

        Counted before sending, so consumed minus (scored + dead-lettered + duplicates) is what
        is in flight while the broker has not acknowledged a batch yet.
        """
        self.consumed.inc(batch.consumed)
        self.batch_size.observe(batch.consumed)
        self.scoring_seconds.observe(batch.scoring_seconds)

    def record_published(self, batch: BatchResult, acked_at: float) -> None:
        """The broker acknowledged every output of the batch at `acked_at` (epoch seconds)."""
        self.scored.inc(batch.scored)
        for task in batch.tasks:
            self.tasks.labels(task.priority).inc()
        for letter in batch.dead_letters:
            self.dead_lettered.labels(letter.error_kind).inc()
        if batch.duplicates:
            self.duplicates.inc(batch.duplicates)
        for timestamp in batch.task_timestamps:
            if timestamp:  # None or 0: no timestamp to measure from
                self.latency_seconds.observe(max(acked_at - timestamp, 0.0))

    def record_queue(self, progress: QueueProgress) -> None:
        """What the call queue reported after a batch (every record acknowledged) or a
        rebalance (streamer/queue_worker.py)."""
        self.queue_partitions.set(progress.partitions)
        self.queue_entries.set(progress.entries)
        for tier, count in progress.open_by_tier.items():
            self.queue_open_tasks.labels(tier).set(count)
        if progress.recovery_seconds is not None:
            self.queue_recovery_seconds.set(progress.recovery_seconds)
        if progress.send_retries:
            self.send_retries.inc(progress.send_retries)
        if progress.invalid:
            self.queue_inputs.labels("invalid").inc(progress.invalid)
        counts = progress.counts
        if counts is None:
            return
        for name in QUEUE_RESULTS[:-1]:
            value = getattr(counts, name)
            if value:
                self.queue_inputs.labels(name).inc(value)
        if counts.superseded:
            self.queue_superseded.inc(counts.superseded)
        if counts.exhausted:
            self.queue_exhausted.inc(counts.exhausted)
        if counts.forgotten:
            self.queue_forgotten.inc(counts.forgotten)
        for reason, value in counts.withdrawn.items():
            self.queue_withdrawals.labels(reason).inc(value)

    def record_routed(self, source: str, result: RouteResult) -> None:
        self.routed.labels(source, "routed").inc(len(result.routed))
        if result.invalid:
            self.routed.labels(source, "invalid").inc(result.invalid)
        for letter in result.dead_letters:
            self.dead_lettered.labels(letter.error_kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
