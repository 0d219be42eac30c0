"""The suite's ratios, targets and tables, computed from its result only (no broker, no
timing), so they are unit-tested on a made-up result (tests/test_bench_report.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.results import Latency, Reload, SuiteResult, Target

THROUGHPUT_SCENARIOS: dict[str, str] = {
    "confluent_loop": "ceiling: confluent-kafka loop",
    "native_loop": "batch-native: confluent-kafka + BatchScorer, no call queue",
    "faust_passthrough": "ceiling: Faust pass-through",
    "scorer_production": "scorer, production model",
    "scorer_no_queue": "scorer, production, no call queue",
    "scorer_small": "scorer, small test model",
    "scorer_two_workers": "scorer, production, 2 workers",
    "per_event": "per-event peer (batch of 1)",
}
BASELINE = "faust_passthrough"
RELOAD_TARGET = "reload gap ≤ 1 s with 0 lost, 0 twice"
QUEUE_TARGET = "call queue: at most 20% fewer events/s than without it"


def _rate(result: SuiteResult, name: str) -> float | None:
    backlog = result.backlog(name)
    return float(backlog.events_per_s) if backlog and backlog.events_per_s else None


def _consumer_cpu(result: SuiteResult, name: str) -> float | None:
    backlog = result.backlog(name)
    return backlog.consumer_cpu if backlog else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def ratios(result: SuiteResult) -> dict[str, float | None]:
    """The side-by-side ratios of the run (None when a side was not measured)."""
    production = _rate(result, "scorer_production")
    return {
        "production_vs_faust_passthrough": _ratio(production, _rate(result, BASELINE)),
        "production_vs_confluent_loop": _ratio(production, _rate(result, "confluent_loop")),
        "faust_passthrough_vs_confluent_loop": _ratio(
            _rate(result, BASELINE), _rate(result, "confluent_loop")
        ),
        # What the same scoring and the same outputs reach without Faust (both without the
        # call queue: a task and a prediction-log line per event).
        "native_loop_vs_no_queue": _ratio(
            _rate(result, "native_loop"), _rate(result, "scorer_no_queue")
        ),
        "small_vs_production": _ratio(_rate(result, "scorer_small"), production),
        "two_workers_vs_one": _ratio(_rate(result, "scorer_two_workers"), production),
        "batching_vs_per_event": _ratio(production, _rate(result, "per_event")),
        "queue_vs_no_queue": _queue_ratio(result, _rate),
        "queue_cpu_per_event_vs_no_queue": _queue_ratio(result, _consumer_cpu),
        "stream_p99_under_score_load": _score_load_ratio(result.latency()),
        "stream_p99_under_api_score_load": _score_load_ratio(result.latency(), api=True),
        # CPU per event rather than events per second: less at the mercy of other processes.
        "production_cpu_per_event_vs_faust_passthrough": _ratio(
            _consumer_cpu(result, "scorer_production"), _consumer_cpu(result, BASELINE)
        ),
    }


def _queue_ratio(
    result: SuiteResult, figure: Callable[[SuiteResult, str], float | None]
) -> float | None:
    """`figure` of the production scorer over the one without the queue, when the production
    scorer did run with it (a `--set queue_enabled=false` run has no queue to compare)."""
    production = result.backlog("scorer_production")
    if production is None or production.queue_enabled is False:
        return None
    return _ratio(figure(result, "scorer_production"), figure(result, "scorer_no_queue"))


def _score_load_ratio(latency: Latency | None, api: bool = False) -> float | None:
    if latency is None:
        return None
    loaded = latency.api_loaded() if api else latency.loaded()
    measured = [p.p99_ms for p in loaded.values() if p.p99_ms is not None]
    base = latency.unloaded(api).p99_ms
    return _ratio(max(measured), base) if measured and base else None


def targets(result: SuiteResult) -> list[Target]:
    """The issue's targets, each met or not with its ratio."""
    r = ratios(result)
    found: list[Target] = []

    def at_least(name: str, ratio: float | None, bound: float, value: str) -> None:
        met = None if ratio is None else ratio >= bound
        found.append(Target(name=name, value=value, ratio=ratio, met=met))

    production = _rate(result, "scorer_production")
    at_least(
        "scorer (production model) ≥ 0.8x Faust pass-through",
        r["production_vs_faust_passthrough"],
        0.8,
        f"{production or '—'} vs {_rate(result, BASELINE) or '—'} ev/s",
    )
    at_least(
        "batching ≥ 10x the per-event peer",
        r["batching_vs_per_event"],
        10.0,
        f"{production or '—'} vs {_rate(result, 'per_event') or '—'} ev/s",
    )
    at_least(
        QUEUE_TARGET,
        r["queue_vs_no_queue"],
        0.8,
        f"{production or '—'} vs {_rate(result, 'scorer_no_queue') or '—'} ev/s; CPU per "
        f"event {_fmt(r['queue_cpu_per_event_vs_no_queue'])}x",
    )
    latency = result.latency()
    p99 = latency.steady.p99_ms if latency else None
    rate = latency.rate_events_per_s if latency else 500
    found.append(
        Target(
            name=f"p99 ≤ 100 ms at {rate:.0f} ev/s (local broker)",
            value=f"p99 {p99} ms" if p99 is not None else "—",
            ratio=_ratio(p99, 100.0),
            met=None if p99 is None else p99 <= 100.0,
        )
    )
    found.append(_reload_target(result.reload()))
    failing = score_errors(latency)
    noted = f"; /score answered errors: {failing}" if failing else ""
    api_load = r["stream_p99_under_api_score_load"]
    found.append(
        Target(
            name="/score load on `callscore api` raises stream p99 ≤ 1.5x",
            value=_score_load_value(latency, api=True) + noted,
            ratio=api_load,
            met=None if api_load is None or failing else api_load <= 1.5,
        )
    )
    return found


def _reload_target(reload: Reload | None) -> Target:
    if reload is None:
        return Target(name=RELOAD_TARGET, value="—", ratio=None, met=None)
    versions = reload.tasks_per_version
    clean = reload.lost == 0 and reload.scored_twice == 0 and len(versions) >= 2
    return Target(
        name=RELOAD_TARGET,
        value=f"gap {reload.largest_gap_ms} ms; lost {reload.lost}, twice "
        f"{reload.scored_twice}; tasks per version {versions}",
        ratio=_ratio(float(reload.largest_gap_ms), 1000.0),
        met=reload.largest_gap_ms <= 1000 and clean,
    )


def score_errors(latency: Latency | None) -> dict[str, dict[str, int]]:
    """Statuses other than 200 and 503 (the queue's refusal) per /score load: then that load
    did not score, and says nothing about what scoring costs the stream."""
    if latency is None:
        return {}
    errors = {}
    for key, loads in (
        ("http_alone", latency.http_alone),
        ("http_under_stream", latency.http_under_stream),
        ("http_api_under_stream", latency.http_api_under_stream),
    ):
        for size, h in loads.items():
            bad = {k: v for k, v in h.statuses.items() if k not in ("200", "503")}
            if bad:
                errors[f"{key} {size}/request"] = bad
    return errors


def _score_load_value(latency: Latency | None, api: bool = False) -> str:
    alone = latency.unloaded(api).p99_ms if latency else None
    parts = [f"quiet {alone if alone is not None else '—'} ms"]
    loaded = (latency.api_loaded() if api else latency.loaded()) if latency else {}
    for n, phase in loaded.items():
        if phase.p99_ms is not None:
            parts.append(f"{n}/request {phase.p99_ms} ms")
    return "p99 " + ", ".join(parts)


def broker_label(result: SuiteResult) -> str:
    """What the run's broker was: results from before the bench named it ran on Tansu."""
    if result.broker is None:
        return "tansu (not recorded: a result from before the bench ran on Apache Kafka)"
    return f"{result.broker.origin} ({result.broker.kind})"


def summarised(result: SuiteResult) -> SuiteResult:
    """The result with its ratios and targets, as the results file keeps them."""
    return result.model_copy(update={"ratios": ratios(result), "targets": targets(result)})


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) + suffix
    return f"{value:,}{suffix}" if isinstance(value, int | float) else str(value)


def render(result: SuiteResult, console: Console | None = None) -> None:
    console = console or Console(width=160)
    machine = result.machine
    console.print(
        f"[bold]callscore bench[/bold] — {machine.cpus} CPUs ({machine.cpu_model}), "
        f"Python {machine.python}, product {machine.product_commit}; load average "
        f"{result.load_average.start} at start, {result.load_average.end} at end"
    )
    console.print(f"broker: {broker_label(result)}")
    console.print(f"data: {result.data_source}; model: {result.production_model}")
    console.print(f"settings (every scenario): {result.settings}")
    for name, scenario in result.scenarios.items():
        error = getattr(scenario, "error", None)
        if error:
            console.print(f"[red]{name} failed:[/red] {error}")
    latency = result.latency()
    for load, statuses in score_errors(latency).items():
        console.print(f"[red]/score answered errors[/red] ({load}): {statuses}")
    _throughput_table(console, result)
    if latency is not None:
        _latency_table(console, latency)
        _http_table(console, latency)
    reload = result.reload()
    if reload is not None:
        _reload_table(console, reload)
    _targets_table(console, result)
    if "scorer_two_workers" in result.scenarios:
        console.print(
            "Two workers: on this machine's "
            f"{machine.cpus} cores the two workers share the CPUs with the broker and the "
            "bench, so no linear scaling can show; the row says what a second worker costs or "
            "gains here, not what it does with cores to spare."
        )


def _throughput_table(console: Console, result: SuiteResult) -> None:
    rows = [(n, b) for n in THROUGHPUT_SCENARIOS if (b := result.backlog(n)) is not None]
    if not rows:
        return
    baseline = _rate(result, BASELINE)
    table = Table(
        title="Throughput on a backlog produced before start (first → last output), best of the "
        "rounds; CPU per 10k events while it drains; ratios to the Faust pass-through"
    )
    for column in (
        "scenario",
        "events",
        "events/s",
        "every round",
        "ratio",
        "CPU ratio",
        "lost/twice",
        "batch",
        "scoring ms/batch",
        "CPU s/10k",
        "broker CPU s/10k",
        "peak RSS MB",
    ):
        left = column == "scenario"
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    baseline_cpu = _consumer_cpu(result, BASELINE)
    for name, s in rows:
        table.add_row(
            THROUGHPUT_SCENARIOS[name],
            _fmt(s.events),
            _fmt(s.events_per_s),
            _fmt([r.events_per_s for r in s.rounds or []]),
            _fmt(_ratio(s.events_per_s, baseline)),
            _fmt(_ratio(s.consumer_cpu, baseline_cpu)),
            f"{s.lost}/{s.repeated}",
            _fmt(s.mean_batch_size),
            _fmt(s.scoring_ms_per_batch),
            _fmt(s.consumer_cpu),
            _fmt(s.cpu_seconds_per_10k.get("broker")),
            _fmt(s.peak_rss_mb),
        )
    console.print(table)


def _latency_table(console: Console, latency: Latency) -> None:
    table = Table(
        title=f"End-to-end latency at {latency.rate_events_per_s:.0f} events/s, production model "
        "(prospect produced → call task sent, Kafka timestamps)"
    )
    for column in ("phase", "events", "p50 ms", "p99 ms", "max ms", "lost", "producer lag ms"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    phases = {
        "warm-up (first seconds, excluded from 'steady')": latency.warmup,
        "steady": latency.steady,
        "rounds: quiet phases (pooled)": latency.quiet,
        **{
            f"steady, the scorer's /score under load ({n} event{'s' if n > 1 else ''}/request)": (
                phase
            )
            for n, phase in latency.loaded().items()
        },
        **{
            f"rounds: `callscore api`'s /score under load ({n} event{'s' if n > 1 else ''}/"
            "request; pooled)": phase
            for n, phase in latency.api_loaded().items()
        },
    }
    for label, p in phases.items():
        if p is not None:
            table.add_row(
                label,
                _fmt(p.events),
                _fmt(p.p50_ms),
                _fmt(p.p99_ms),
                _fmt(p.max_ms),
                _fmt(p.lost),
                _fmt(p.producer_worst_lag_ms),
            )
    console.print(table)
    console.print(
        f"peak RSS: the scorer and its children (the call queue's process) "
        f"{_fmt(latency.peak_rss_mb)} MB; `callscore api` and its children (the /score "
        f"processes) {_fmt(latency.score_process_peak_rss_mb)} MB"
    )


def _http_table(console: Console, latency: Latency) -> None:
    if not latency.http_alone and not latency.http_under_stream:
        return
    table = Table(title="POST /score (production model, clients in their own process)")
    for column in (
        "load",
        "events/request",
        "clients",
        "requests/s",
        "events/s",
        "p50 ms",
        "p99 ms",
        "statuses",
    ):
        table.add_column(column, justify="left" if column == "load" else "right")
    for label, loads in (
        ("/score alone", latency.http_alone),
        ("beside the stream, on the scorer (older results)", latency.http_under_stream),
        ("beside the stream", latency.http_api_under_stream),
    ):
        for size, h in loads.items():
            table.add_row(
                label,
                size,
                _fmt(h.concurrency),
                _fmt(h.requests_per_s),
                _fmt(h.events_per_s),
                _fmt(h.p50_ms),
                _fmt(h.p99_ms),
                _fmt(h.statuses),
            )
    console.print(table)


RELOAD_ROWS = (
    "events",
    "largest_gap_ms",
    "largest_gap_starts_ms_after_publish",
    "largest_gap_around_reload_ms",
    "largest_input_gap_ms",
    "publish_to_first_v2_task_ms",
    "lost",
    "scored_twice",
    "tasks_per_version",
    "latency",
)


def _reload_table(console: Console, reload: Reload) -> None:
    table = Table(title=f"Hot reload at {reload.rate_events_per_s:.0f} events/s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    figures = reload.model_dump(include=set(RELOAD_ROWS))
    for key in RELOAD_ROWS:
        table.add_row(key.replace("_", " "), _fmt(figures.get(key)))
    console.print(table)


def _targets_table(console: Console, result: SuiteResult) -> None:
    table = Table(title="Targets")
    for column in ("target", "measured", "ratio", "met"):
        table.add_column(column, justify="right" if column == "ratio" else "left")
    for t in targets(result):
        met = "not measured" if t.met is None else ("met" if t.met else "NOT met")
        table.add_row(t.name, t.value, _fmt(t.ratio), met)
    console.print(table)
