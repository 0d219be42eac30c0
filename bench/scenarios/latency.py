"""End-to-end latency at a fixed rate, and the dialer-facing HTTP API beside the stream.

Latency of an event: the Kafka timestamp of its prospect record (set by the bench's producer
when it hands the record over) to the Kafka timestamp of its call task (set by the scorer's
producer when it sends it). Phases, back to back, with one `callscore stream` worker serving the
production model and (with `http`) one `callscore api` beside it:
1. steady: `rate` events/s; the first `warmup_seconds` are reported apart (first fetches);
2. /score alone on the API, with 1 and with 100 events per request (scenarios.http_load, its own
   process);
3. `load_rounds` rounds (Options: 2) of three phases at `rate`, each `loaded_seconds` long:
   quiet (no /score load), and the API's /score under each request size's load; the order is
   reversed every other round, so that a drift of the machine over the run (another process,
   the broker's log growing) weighs on both sides alike.
The ratio of 3's pooled loaded p99 to its pooled quiet p99 is what /score load on the API costs
the stream, measured side by side.
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
QUIET = "quiet"
# Between phases: the previous phase's events are all through the scorer (and its call queue)
# before the next one starts, then this pause; else a backlog one phase leaves behind (a loaded
# phase at the edge of the machine's capacity) would count against the next one.
PHASE_PAUSE_SECONDS = 1.0
DRAIN_TIMEOUT_SECONDS = 180.0
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
    settings: Settings, count: int, timeout: float = 120.0, settle: float = 0.0
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


def wait_drained(worker: StreamWorker, events: int, timeout: float) -> None:
    """Until the scorer has taken `events` events all the way: through its call queue when it
    has one (each event is one queue input), else into call tasks; at most `timeout` (or
    DRAIN_TIMEOUT_SECONDS, the lower)."""
    name = (
        "callscore_queue_inputs_total"
        if worker.settings.queue_enabled
        else "callscore_tasks_produced_total"
    )
    worker.wait_until(
        lambda: worker.metric(name) >= events,
        min(timeout, DRAIN_TIMEOUT_SECONDS),
        f"{events} events through",
    )
    time.sleep(PHASE_PAUSE_SECONDS)


def _round_phase(
    ctx: Context,
    scorer: StreamWorker,
    api: ApiWorker,
    name: str,
    size: int | None,
    stamps: dict[str, int],
) -> tuple[Events, float, HttpLoad | None]:
    """The stream at the rate for `loaded_seconds`, while the API's /score is under the load of
    `size` events per request (none: quiet): (events, the producer's worst lag, the load)."""
    options, settings = ctx.options, api.settings
    wait_drained(scorer, len(stamps), options.drain_timeout_seconds)
    events = ctx.payloads.events(name, int(options.rate * options.loaded_seconds))
    if size is None:
        return events, produce_paced(settings, events, options.rate, stamps), None
    load = _load(ctx, api, size, options.loaded_seconds + 2 * LOAD_LEAD_SECONDS)
    time.sleep(LOAD_LEAD_SECONDS)
    lag = produce_paced(settings, events, options.rate, stamps)
    return events, lag, load.result(options.loaded_seconds + 180)


def _load(ctx: Context, worker: StreamWorker, size: int, seconds: float) -> LoadProcess:
    body = _body_file(ctx, ctx.payloads.events(f"http-{size}", size))
    return LoadProcess(worker.base_url + "/score", body, size, seconds, HTTP_CONCURRENCY)


def round_order(round_number: int) -> list[int | None]:
    """The phases of one round: quiet (None), then each request size; reversed every other."""
    order: list[int | None] = [None, *REQUEST_SIZES]
    return order if round_number % 2 == 0 else order[::-1]


def _rounds(
    ctx: Context, scorer: StreamWorker, api: ApiWorker, stamps: dict[str, int]
) -> tuple[dict[str, list[Events]], dict[str, float], dict[str, HttpLoad]]:
    """`load_rounds` rounds: the events of each kind of phase (QUIET, "api-loaded-<size>"), each
    phase's with its round ("quiet-r1", ...), the producer's worst lag per kind, and the /score
    loads by "<size>" (round 1), "<size> r2"..."""
    events: dict[str, list[Events]] = {}
    lags: dict[str, float] = {}
    loads: dict[str, HttpLoad] = {}
    for number in range(ctx.options.load_rounds):
        for size in round_order(number):
            kind = QUIET if size is None else f"api-loaded-{size}"
            phase, lag, load = _round_phase(ctx, scorer, api, f"{kind}-r{number + 1}", size, stamps)
            events.setdefault(kind, []).append(phase)
            events[f"{kind}-r{number + 1}"] = [phase]
            lags[kind] = max(lags.get(kind, 0.0), lag)
            if load is not None:
                loads[str(size) if number == 0 else f"{size} r{number + 1}"] = load
    return events, lags, loads


def latency_and_http(ctx: Context, http: bool = True) -> Latency:
    options = ctx.options
    settings = ctx.settings("latency")
    worker = ctx.worker(settings, "w0")
    api = ctx.worker(settings, "api", ApiWorker) if http else None
    phases: dict[str, list[Events]] = {}
    lags: dict[str, float] = {}
    http_alone: dict[str, HttpLoad] = {}
    http_api: dict[str, HttpLoad] = {}
    stamps: dict[str, int] = {}  # event id -> its prospect record's Kafka timestamp
    try:
        publish(settings, ctx.production)
        worker.wait_ready(90)
        warm = ctx.payloads.events("warmup", int(options.rate * options.warmup_seconds))
        steady = ctx.payloads.events("steady", int(options.rate * options.latency_seconds))
        phases["warmup"], phases["steady"] = [warm], [steady]
        lag = produce_paced(settings, Events(warm.dicts + steady.dicts), options.rate, stamps)
        lags = {"steady": lag}
        if isinstance(api, ApiWorker):
            api.wait_ready(90)
            for size in REQUEST_SIZES:
                wait_drained(worker, len(stamps), options.drain_timeout_seconds)
                load = _load(ctx, api, size, options.http_seconds)
                http_alone[str(size)] = load.result(options.http_seconds + 180)
            rounds, round_lags, http_api = _rounds(ctx, worker, api, stamps)
            phases |= rounds
            lags |= round_lags
        total = len(stamps)  # every event produced
        # reading the tier topics back goes at some thousands of records a second here
        timeout = min(max(120.0, total / 200), options.drain_timeout_seconds)
        tasks = wait_for_tasks(settings, total, timeout=timeout)
        # the scorer and its children (the call queue's process); the API and its /score ones
        rss = [peak_rss_mb(pid) for pid in [worker.process.pid, *children(worker.process.pid)]]
        api_pids = [] if api is None else [api.process.pid, *children(api.process.pid)]
        score_rss = [peak_rss_mb(pid) for pid in api_pids]
    finally:
        worker.stop()
        if api is not None:
            api.stop()
    latency = latencies_by_id(stamps, tasks)
    stats: dict[str, PhaseLatency] = {}
    for name, kind in phases.items():
        ids = [i for events in kind for i in events.ids]
        stats[name] = latency_stats(latency[i] for i in ids if i in latency)
        stats[name].lost = sum(1 for i in ids if i not in latency)
        if name in lags:  # how late the bench's own producer was, at worst
            stats[name].producer_worst_lag_ms = round(lags[name] * 1000, 1)
    return Latency(
        rate_events_per_s=options.rate,
        warmup=stats["warmup"],
        steady=stats["steady"],
        quiet=stats.get(QUIET),
        round_phases={name: stat for name, stat in stats.items() if "-r" in name},
        api_loaded_1=stats.get("api-loaded-1"),
        api_loaded_100=stats.get("api-loaded-100"),
        http_alone=http_alone,
        http_api_under_stream=http_api,
        peak_rss_mb=rss,
        score_process_peak_rss_mb=score_rss,
    )


def latency_only(ctx: Context) -> Latency:
    return latency_and_http(ctx, http=False)
