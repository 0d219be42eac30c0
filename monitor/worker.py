"""`callscore monitor`: online quality and drift of the served models, derived from Kafka alone.

A worker of its own, not an agent of the scorer app (docs/feedback-loop.md): the join needs every
prediction and every outcome of all partitions in one place, quality is per model version across
all replicas, and none of it may slow down scoring.

`run_monitor` is the thin confluent-kafka loop around the pure `monitor.online.Monitor`: poll a
`TopicReader`, send the dead letters through a `TopicWriter` and wait for the broker's
acknowledgement, then count; refresh the quality gauges every QUALITY_INTERVAL_SECONDS. A send
that fails raises `PublishError` and ends the worker: nothing was counted for that batch, and a
restart reads its inputs again.

What a start reads (nothing is kept on disk): the model topic whole (compacted, small), and the
prediction log and the outcomes from their first records stamped (Kafka timestamp) within the
lookback, Settings.monitor_window_max_age_days, before the start (`start_at_ms`); the join
drops predictions older than that anyway (in event time). So the cost of a restart is bounded
by the lookback (and by the topics' retention, Settings.history_retention_days, when shorter),
not by the whole history, and the gauges after a restart are computed over the lookback: a
version's quality window holds only the labelled outcomes found there, and the counters start
again from what was read. An outcome older than the lookback that no earlier run saw (a monitor
down for longer than the lookback) is not dead-lettered by the monitor; nothing is lost, the
nightly lake export keeps every record, an invalid one with `valid=false` and its
`invalid_reason`. The dead letters already published are read whole at start
(`published_dead_letters`), so one is never sent twice. A broker without a time index (the
local broker, Tansu, answers every time lookup with 0) is still read from the beginning:
correct, just unbounded.

Consumer lag: being the one process per deployment, the monitor also reads the lag of the
deployment's three consumer groups (the scorers', the call queue's and its own:
core/consumer_lag.py) every LAG_INTERVAL_SECONDS in a thread of its own, so a slow broker answer
never holds up the loop, and serves it as `callscore_consumer_lag`. The monitor is no group
member, but it commits how far it has handled its topics to its group
(`TopicReader.commit_positions`, every COMMIT_INTERVAL_SECONDS, after the batch's dead letters
are acknowledged): its lag is what it has still to handle. Those commits are never read back: a
start still reads from the lookback.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from core.consumer_lag import LagReader, deployment_groups, monitor_group_id, monitor_topics
from core.errors import CallscoreError
from core.settings import Settings
from core.topic_reader import TopicReader, read_topics
from core.topic_writer import TopicWriter
from monitor.metrics import MonitorMetrics
from monitor.online import Monitor, MonitorResult, SourceKey
from registry.keys import trusted_keys
from schemas import DeadLetter

log = logging.getLogger(__name__)

# How often the quality gauges are recomputed (each pass scores every tracked version's window).
QUALITY_INTERVAL_SECONDS = 2.0
POLL_SECONDS = 0.5
MAX_RECORDS_PER_POLL = 2000
DELIVERY_TIMEOUT_SECONDS = 30.0
# Reading the outcome dead-letter topic at start (what a previous run already published).
STARTUP_READ_TIMEOUT_SECONDS = 120.0
# How often the consumer groups' lag is read, and the monitor's own progress committed.
LAG_INTERVAL_SECONDS = 5.0
COMMIT_INTERVAL_SECONDS = 1.0


def published_dead_letters(settings: Settings, timeout: float) -> set[SourceKey]:
    """Sources of the outcome dead letters already on their topic (a previous run's work)."""
    found = set()
    for record in read_topics(settings, [settings.topic_outcome_dead_letters], timeout=timeout):
        try:
            letter = DeadLetter.model_validate_json(record.value or b"")
        except ValidationError:
            continue  # not one of ours: nothing to skip for it
        if letter.source_topic == settings.topic_outcomes:
            found.add((letter.source_topic, letter.source_partition, letter.source_offset))
    return found


def restart_window_start(settings: Settings, now: datetime) -> dict[str, int]:
    """Where a start reads from (Kafka timestamp in ms per topic): the prediction log and the
    outcomes from the lookback (Settings.monitor_window_max_age_days) before `now`; the model
    topic is not in it, so it is read whole."""
    start = now - timedelta(days=settings.monitor_window_max_age_days)
    at_ms = int(start.timestamp() * 1000)
    return {settings.topic_predictions: at_ms, settings.topic_outcomes: at_ms}


def run_monitor(settings: Settings, stop: threading.Event) -> None:
    """Serve /metrics and follow the prediction log, outcomes and models until `stop` is set."""
    from prometheus_client import start_http_server

    keys = trusted_keys(settings)
    metrics = MonitorMetrics()
    try:
        server, _thread = start_http_server(
            settings.monitor_http_port, settings.http_host, registry=metrics.registry
        )
    except OSError as exc:
        raise CallscoreError(
            f"cannot serve the monitor's metrics on {settings.http_host}:"
            f"{settings.monitor_http_port} (CALLSCORE_MONITOR_HTTP_PORT): {exc.strerror}"
        ) from None
    log.info("monitor metrics on http://%s:%d/metrics", settings.http_host, server.server_port)
    lag_stop = threading.Event()
    lag_thread = threading.Thread(
        target=watch_lag, args=(settings, metrics, lag_stop), name="consumer-lag", daemon=True
    )
    lag_thread.start()
    try:
        known = published_dead_letters(settings, STARTUP_READ_TIMEOUT_SECONDS)
        monitor = Monitor(settings, keys, known)
        writer = TopicWriter(settings, "outcome dead letters")
        start_at = restart_window_start(settings, datetime.now(UTC))
        with TopicReader(
            settings,
            monitor_topics(settings),
            start_at_ms=start_at,
            group_id=monitor_group_id(settings),
        ) as reader:
            _follow(reader, monitor, writer, metrics, stop)
    finally:
        lag_stop.set()
        server.shutdown()
        server.server_close()


def watch_lag(settings: Settings, metrics: MonitorMetrics, stop: threading.Event) -> None:
    """Read the deployment's consumer lag every LAG_INTERVAL_SECONDS until `stop` is set. A
    check the broker does not answer is counted (`result="failed"`) and logged once per spell;
    the gauges keep their last values."""
    groups = deployment_groups(settings)
    reader: LagReader | None = None
    trouble: str | None = None
    try:
        while not stop.is_set():
            try:
                reader = reader or LagReader(settings)
                metrics.record_lag(reader.read(groups))
                if trouble is not None:
                    log.info("consumer lag: read again")
                    trouble = None
            except CallscoreError as exc:
                metrics.lag_checks.labels("failed").inc()
                if str(exc) != trouble:
                    log.warning("consumer lag: %s", exc)
                trouble = str(exc)
            stop.wait(LAG_INTERVAL_SECONDS)
    finally:
        if reader is not None:
            reader.close()


def _follow(
    reader: TopicReader,
    monitor: Monitor,
    writer: TopicWriter,
    metrics: MonitorMetrics,
    stop: threading.Event,
) -> None:
    caught_up = False
    next_quality = 0.0
    next_commit = 0.0
    while not stop.is_set():
        result = monitor.handle(reader.poll(POLL_SECONDS, MAX_RECORDS_PER_POLL), datetime.now(UTC))
        writer.send_all(result.outgoing, DELIVERY_TIMEOUT_SECONDS)
        metrics.record(result)  # only now: the dead letters are acknowledged
        _log(result)
        if time.monotonic() >= next_commit:
            reader.commit_positions()  # what is handled: the monitor's lag (never read back)
            next_commit = time.monotonic() + COMMIT_INTERVAL_SECONDS
        if not caught_up and not reader.missing_topics and reader.at_end:
            caught_up = True
            metrics.caught_up.set(1)
            log.info(
                "caught up: %d predictions in the window, %d outcomes waiting",
                monitor.predictions_in_window,
                monitor.waiting,
            )
        if time.monotonic() >= next_quality:
            metrics.record_quality(monitor.quality())
            next_quality = time.monotonic() + QUALITY_INTERVAL_SECONDS


def _log(result: MonitorResult) -> None:
    for letter in result.new:
        log.warning(
            "outcome dead letter %s[%d]@%d: %s",
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
            letter.message,
        )
    for problem in result.invalid_predictions:
        log.warning("invalid prediction record %s", problem)
    for (outcome, reason), n in result.counts.manifests.items():
        if outcome == "rejected":
            log.warning("%d model-topic record(s) rejected: %s", n, reason)
