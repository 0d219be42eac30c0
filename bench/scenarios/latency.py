"""End-to-end latency at a fixed rate, and the HTTP API beside the stream, in one worker.

Latency of an event: the Kafka timestamp of its prospect record (set by the bench's producer
when it hands the record over) to the Kafka timestamp of its call task (set by the scorer's
producer when it sends it). Phases, back to back in one `callscore stream` worker serving the
production model:
1. steady: `rate` events/s; the first `warmup_seconds` are reported apart (first fetches);
2. /score alone, with 1 and with 100 events per request (scenarios.http_load, its own process);
3. the stream at `rate` again while the scorer's /score is under that load, once per request
   size;
4. the same while the /score of `callscore api` (a process of its own, the dialer-facing HTTP)
   is under that load.
The ratio of 3's (4's) p99 to 1's p99 is what /score load on the scorer (on the API) costs the
stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.context import Context, publish
from bench.payloads import Events
from bench.resources import children, peak_rss_mb
from bench.results import HttpLoad, Latency, PhaseLatency
from bench.scenarios.http_load import LoadProcess
from core.kafka import producer_config
from core.settings import Settings
from core.topic_reader import Record
from testkit.harness import ApiWorker, StreamWorker, collect

REQUEST_SIZES = (1, 100)  # results.Latency has a loaded phase for each
# Between phases: the previous phase's last events are scored before the next one starts.
PHASE_PAUSE_SECONDS = 1.0
# The load generator starts (and warms up) before the paced events, and ends after them.
LOAD_LEAD_SECONDS = 1.0
HTTP_CONCURRENCY = 2  # keeps one /score process busy, with a request waiting


def produce_paced(
    settings: Settings, events: Events, rate: float, stamps: dict[str, int] | None = None
) -> float:
    """Produce at `rate` events/s, each stamped with the time it is handed to the client (its
    Kafka timestamp, also kept in `stamps` by event id); returns the seconds the last event was
    late at most (the producer's own lag)."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    start = time.monotonic()
    worst_lag = 0.0
    for i, ((key, value), event_id) in enumerate(zip(events.records(), events.ids, strict=True)):
        due = start + i / rate
        while (now := time.monotonic()) < due:
            producer.poll(min(due - now, 0.005))
        worst_lag = max(worst_lag, time.monotonic() - due)
        stamp = int(time.time() * 1000)
        producer.produce(settings.topic_prospects, key=key, value=value, timestamp=stamp)
        if stamps is not None:
            stamps[event_id] = stamp
    producer.flush(30)
    return worst_lag


def latency_stats(latencies_s: Iterable[float]) -> PhaseLatency:
    ms = np.array(list(latencies_s)) * 1000
    if not len(ms):
        return PhaseLatency(events=0)
    return PhaseLatency(
        events=len(ms),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1),
        max_ms=round(float(ms.max()), 1),
    )


def latencies_by_id(produced: Mapping[str, int], tasks: list[Record]) -> dict[str, float]:
    """Seconds from each event's prospect record (its Kafka timestamp, as `produce_paced` set
    it) to its (first) call task. Not read back from the prospects topic: one record per batch,
    as a paced producer sends them, is where the local broker's fetch slows down steeply."""
    latency: dict[str, float] = {}
    for task in sorted(tasks, key=lambda t: t.timestamp_ms):
        event_id = str(task.json()["event_id"])
        if event_id in produced and event_id not in latency:
            latency[event_id] = (task.timestamp_ms - produced[event_id]) / 1000.0
    return latency


def wait_for_tasks(
    settings: Settings, count: int, timeout: float = 120, settle: float = 0.0
) -> list[Record]:
    tasks = collect(
        settings,
        settings.task_topics.values(),
        lambda r: len(r) >= count,
        timeout=timeout,
        settle=settle,
    )
    if len(tasks) < count:
        raise TimeoutError(f"{len(tasks)} of {count} call tasks after {timeout:.0f} s")
    return tasks


def _body_file(ctx: Context, events: Events) -> Path:
    path = ctx.workdir / f"score-body-{len(events)}.json"
    document: Any = events.dicts[0] if len(events) == 1 else events.dicts
    path.write_text(json.dumps(document))
    return path


def _loaded_phase(
    ctx: Context, target: StreamWorker, name: str, size: int, stamps: dict[str, int]
) -> tuple[Events, float, HttpLoad]:
    """The stream at the rate while `target`'s /score is under load: (events, the producer's
    worst lag, the load's result)."""
    options, settings = ctx.options, target.settings
    time.sleep(PHASE_PAUSE_SECONDS)
    events = ctx.payloads.events(name, int(options.rate * options.loaded_seconds))
    load = _load(ctx, target, size, options.loaded_seconds + 2 * LOAD_LEAD_SECONDS)
    time.sleep(LOAD_LEAD_SECONDS)
    lag = produce_paced(settings, events, options.rate, stamps)
    return events, lag, load.result(options.loaded_seconds + 180)


def _load(ctx: Context, worker: StreamWorker, size: int, seconds: float) -> LoadProcess:
    body = _body_file(ctx, ctx.payloads.events(f"http-{size}", size))
    return LoadProcess(worker.base_url + "/score", body, size, seconds, HTTP_CONCURRENCY)


def latency_and_http(ctx: Context, http: bool = True) -> Latency:
    options = ctx.options
    settings = ctx.settings("latency")
    worker = ctx.worker(settings, "w0")
    phases: dict[str, Events] = {}
    lags: dict[str, float] = {}
    http_alone: dict[str, HttpLoad] = {}
    http_under_stream: dict[str, HttpLoad] = {}
    http_api: dict[str, HttpLoad] = {}
    stamps: dict[str, int] = {}  # event id -> its prospect record's Kafka timestamp
    try:
        publish(settings, ctx.production)
        worker.wait_ready(90)
        warm = ctx.payloads.events("warmup", int(options.rate * options.warmup_seconds))
        steady = ctx.payloads.events("steady", int(options.rate * options.latency_seconds))
        phases["warmup"], phases["steady"] = warm, steady
        lag = produce_paced(settings, Events(warm.dicts + steady.dicts), options.rate, stamps)
        lags = {"steady": lag}
        if http:
            for size in REQUEST_SIZES:
                time.sleep(PHASE_PAUSE_SECONDS)
                load = _load(ctx, worker, size, options.http_seconds)
                http_alone[str(size)] = load.result(options.http_seconds + 180)
            for size in REQUEST_SIZES:
                name = f"loaded-{size}"
                phases[name], lags[name], http_under_stream[str(size)] = _loaded_phase(
                    ctx, worker, name, size, stamps
                )
            # The same loads on `callscore api`, the dialer-facing HTTP in its own process.
            api = ctx.worker(settings, "api", ApiWorker)
            try:
                api.wait_ready(90)
                for size in REQUEST_SIZES:
                    name = f"api-loaded-{size}"
                    phases[name], lags[name], http_api[str(size)] = _loaded_phase(
                        ctx, api, name, size, stamps
                    )
            finally:
                api.stop()
        total = sum(len(e) for e in phases.values())
        tasks = wait_for_tasks(settings, total)
        rss = [peak_rss_mb(worker.process.pid)]
        score_rss = [peak_rss_mb(pid) for pid in children(worker.process.pid)]
    finally:
        worker.stop()
    latency = latencies_by_id(stamps, tasks)
    stats: dict[str, PhaseLatency] = {}
    for name, events in phases.items():
        stats[name] = latency_stats(latency[i] for i in events.ids if i in latency)
        stats[name].lost = sum(1 for i in events.ids if i not in latency)
        if name in lags:  # how late the bench's own producer was, at worst
            stats[name].producer_worst_lag_ms = round(lags[name] * 1000, 1)
    return Latency(
        rate_events_per_s=options.rate,
        warmup=stats["warmup"],
        steady=stats["steady"],
        loaded_1=stats.get("loaded-1"),
        loaded_100=stats.get("loaded-100"),
        api_loaded_1=stats.get("api-loaded-1"),
        api_loaded_100=stats.get("api-loaded-100"),
        http_alone=http_alone,
        http_under_stream=http_under_stream,
        http_api_under_stream=http_api,
        peak_rss_mb=rss,
        score_process_peak_rss_mb=score_rss,
    )


def latency_only(ctx: Context) -> Latency:
    return latency_and_http(ctx, http=False)
