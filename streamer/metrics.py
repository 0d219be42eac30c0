"""Prometheus metrics of one scorer replica (base units, `_total` counters).

Each StreamMetrics owns its own CollectorRegistry, so tests can build several side by side.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
