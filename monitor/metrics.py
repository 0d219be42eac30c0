"""Prometheus metrics of `callscore monitor` (own registry per instance, `_total` counters).

Counters follow the accounting of `monitor.online.MonitorResult`; gauges are the online quality
per model version, refreshed from `Monitor.quality()`. A quality number that cannot be computed
yet (one class only, too few rows for PSI, no drift baseline) reads NaN, not a stale value.

The consumer lag of the deployment's three consumer groups (core/consumer_lag.py) is here too:
the monitor is the one process per deployment, so it reads the lag of all of them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from schemas import PRIORITIES

if TYPE_CHECKING:
    from core.consumer_lag import PartitionLag
    from feedback.quality import Quality
    from monitor.online import MonitorResult

NAN = math.nan
LAG_LABELS = ("consumer", "group", "topic", "partition")


def _value(number: float | None) -> float:
    return NAN if number is None else number


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.outcomes_consumed = Counter(
            "callscore_outcomes_consumed", "Call-outcome records taken from Kafka.", registry=r
        )
        self.outcomes_dead_lettered = Counter(
            "callscore_outcomes_dead_lettered",
            "Invalid outcomes on the outcome dead-letter topic (never labels), by reason.",
            ["reason"],
            registry=r,
        )
        self.outcomes_matched = Counter(
            "callscore_outcomes_matched",
            "Outcomes joined to their prediction, on arrival or when the prediction came later.",
            registry=r,
        )
        self.outcomes_unmatched = Counter(
            "callscore_outcomes_unmatched",
            "Outcomes whose prediction was not in the join window when they arrived.",
            registry=r,
        )
        self.outcomes_not_reached = Counter(
            "callscore_outcomes_not_reached",
            "Outcomes of calls that did not reach the prospect (no answer, busy, ...): no label.",
            registry=r,
        )
        self.outcomes_waiting = Gauge(
            "callscore_outcomes_waiting",
            "Unmatched outcomes waiting for their prediction now.",
            registry=r,
        )
        self.outcomes_expired = Counter(
            "callscore_outcomes_expired",
            "Waiting outcomes given up because the waiting buffer was full.",
            registry=r,
        )
        self.predictions_consumed = Counter(
            "callscore_online_predictions_consumed",
            "Prediction-log records taken from Kafka.",
            registry=r,
        )
        self.predictions_invalid = Counter(
            "callscore_online_predictions_invalid",
            "Prediction-log records that are not a valid PredictionRecord (logged, not joined).",
            registry=r,
        )
        self.predictions_in_window = Gauge(
            "callscore_online_predictions_in_window",
            "Prediction records held by the join window.",
            registry=r,
        )
        self.manifests = Counter(
            "callscore_online_manifests",
            "Model-topic records read, by result (trusted, rejected, ignored) and reason.",
            ["result", "reason"],
            registry=r,
        )
        self.caught_up = Gauge(
            "callscore_online_caught_up",
            "1 once every input topic has been read to its end since the start.",
            registry=r,
        )
        self.quality_updates = Counter(
            "callscore_online_quality_updates",
            "Times the quality gauges were recomputed (each reflects every record handled "
            "before it).",
            registry=r,
        )
        version = ["model_version"]
        self.labelled = Gauge(
            "callscore_online_outcomes",
            "Labelled predictions (one per event) behind the online quality.",
            version,
            registry=r,
        )
        self.predictions = Gauge(
            "callscore_online_predictions",
            "Latest predictions of the version behind the PSI.",
            version,
            registry=r,
        )
        self.roc_auc = Gauge("callscore_online_roc_auc", "Online ROC-AUC.", version, registry=r)
        self.brier = Gauge("callscore_online_brier", "Online Brier score.", version, registry=r)
        self.mean_score = Gauge(
            "callscore_online_mean_score",
            "Mean score of the labelled predictions.",
            version,
            registry=r,
        )
        self.observed_rate = Gauge(
            "callscore_online_observed_rate",
            "Share of labelled predictions that subscribed.",
            version,
            registry=r,
        )
        self.conversion = Gauge(
            "callscore_online_conversion_rate",
            "Share of called prospects that subscribed, by tier.",
            ["model_version", "priority"],
            registry=r,
        )
        self.tier_calls = Gauge(
            "callscore_online_tier_outcomes",
            "Labelled predictions per tier.",
            ["model_version", "priority"],
            registry=r,
        )
        self.score_psi = Gauge(
            "callscore_online_score_psi",
            "PSI of the version's recent scores against its training distribution.",
            version,
            registry=r,
        )
        self.feature_psi = Gauge(
            "callscore_online_feature_psi",
            "PSI of each feature of the version's recent predictions against training.",
            ["model_version", "feature"],
            registry=r,
        )
        self._shown: dict[str, set[str]] = {}  # model_version -> features with a PSI series
        self.consumer_lag = Gauge(
            "callscore_consumer_lag",
            "Records of a partition its consumer group has still to read: the high watermark "
            "minus the group's committed offset (nothing committed: minus the low watermark).",
            LAG_LABELS,
            registry=r,
        )
        self.lag_checks = Counter(
            "callscore_consumer_lag_checks",
            "Reads of the consumer groups' lag from the brokers, by result (ok, failed: the "
            "lag gauges keep their last values).",
            ["result"],
            registry=r,
        )
        for result in ("ok", "failed"):
            self.lag_checks.labels(result)  # both series from the start, at 0
        self._lag_series: set[tuple[str, ...]] = set()

    def record(self, result: MonitorResult) -> None:
        """One handled batch whose dead letters the broker has acknowledged."""
        counts = result.counts
        self.outcomes_consumed.inc(counts.outcomes)
        for reason, n in counts.dead_lettered.items():
            self.outcomes_dead_lettered.labels(reason).inc(n)
        self.outcomes_matched.inc(counts.matched_on_arrival + counts.matched_late)
        self.outcomes_unmatched.inc(counts.unmatched_on_arrival)
        self.outcomes_not_reached.inc(counts.not_reached)
        self.outcomes_expired.inc(counts.outcomes_expired)
        self.predictions_consumed.inc(counts.predictions)
        self.predictions_invalid.inc(counts.predictions_invalid)
        for (result_name, reason), n in counts.manifests.items():
            self.manifests.labels(result_name, reason).inc(n)
        self.outcomes_waiting.set(result.waiting)
        self.predictions_in_window.set(result.predictions_in_window)

    def record_quality(self, by_version: dict[int, Quality]) -> None:
        """Replace the quality gauges; versions no longer tracked lose their series."""
        for gone in set(self._shown) - {str(v) for v in by_version}:
            self._remove(gone)
        for version, q in by_version.items():
            v = str(version)
            self.labelled.labels(v).set(q.outcomes)
            self.predictions.labels(v).set(q.predictions)
            self.roc_auc.labels(v).set(_value(q.roc_auc))
            self.brier.labels(v).set(_value(q.brier))
            self.mean_score.labels(v).set(_value(q.mean_score))
            self.observed_rate.labels(v).set(_value(q.observed_rate))
            for tier, conversion in q.conversion_by_tier.items():
                self.conversion.labels(v, tier).set(_value(conversion.rate))
                self.tier_calls.labels(v, tier).set(conversion.calls)
            self.score_psi.labels(v).set(_value(q.score_psi))
            for feature in self._shown.get(v, set()) - set(q.feature_psi):
                self.feature_psi.remove(v, feature)
            for feature, value in q.feature_psi.items():
                self.feature_psi.labels(v, feature).set(value)
            self._shown[v] = set(q.feature_psi)
        self.quality_updates.inc()

    def _remove(self, version: str) -> None:
        for gauge in (
            self.labelled,
            self.predictions,
            self.roc_auc,
            self.brier,
            self.mean_score,
            self.observed_rate,
            self.score_psi,
        ):
            gauge.remove(version)
        for tier in PRIORITIES:
            self.conversion.remove(version, tier)
            self.tier_calls.remove(version, tier)
        for feature in self._shown.pop(version):
            self.feature_psi.remove(version, feature)

    def record_lag(self, lags: list[PartitionLag]) -> None:
        """Replace the lag gauges with one check's answer; a partition no longer in it (a
        deleted topic) loses its series."""
        now = {(x.consumer, x.group_id, x.topic, str(x.partition)): x.lag for x in lags}
        for gone in self._lag_series - now.keys():
            self.consumer_lag.remove(*gone)
        for labels, lag in now.items():
            self.consumer_lag.labels(*labels).set(lag)
        self._lag_series = set(now)
        self.lag_checks.labels("ok").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
