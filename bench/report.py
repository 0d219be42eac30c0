"""The suite's ratios, targets and tables, computed from its result document only (no broker,
no timing), so they are unit-tested on a made-up document (tests/test_bench_report.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

THROUGHPUT_SCENARIOS: dict[str, str] = {
    "confluent_loop": "ceiling: confluent-kafka loop",
    "faust_passthrough": "ceiling: Faust pass-through",
    "scorer_production": "scorer, production model",
    "scorer_small": "scorer, small test model",
    "scorer_two_workers": "scorer, production, 2 workers",
    "per_event": "per-event peer (batch of 1)",
}
BASELINE = "faust_passthrough"


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    ratio: float | None
    met: bool | None  # None: not measured in this run


def _rate(scenarios: dict[str, Any], name: str) -> float | None:
    rate = scenarios.get(name, {}).get("events_per_s")
    return float(rate) if rate else None


def _consumer_cpu(scenarios: dict[str, Any], name: str) -> float | None:
    """CPU seconds per 10k events of the consumer process(es), the broker left out."""
    cpu = scenarios.get(name, {}).get("cpu_seconds_per_10k")
    if not cpu:
        return None
    return round(sum(v for k, v in cpu.items() if k != "broker" and v is not None), 3)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def ratios(scenarios: dict[str, Any]) -> dict[str, float | None]:
    """The side-by-side ratios of the run (None when a side was not measured)."""
    production = _rate(scenarios, "scorer_production")
    latency = scenarios.get("latency", {})
    return {
        "production_vs_faust_passthrough": _ratio(production, _rate(scenarios, BASELINE)),
        "production_vs_confluent_loop": _ratio(production, _rate(scenarios, "confluent_loop")),
        "faust_passthrough_vs_confluent_loop": _ratio(
            _rate(scenarios, BASELINE), _rate(scenarios, "confluent_loop")
        ),
        "small_vs_production": _ratio(_rate(scenarios, "scorer_small"), production),
        "two_workers_vs_one": _ratio(_rate(scenarios, "scorer_two_workers"), production),
        "batching_vs_per_event": _ratio(production, _rate(scenarios, "per_event")),
        "stream_p99_under_score_load": _score_load_ratio(latency),
        # CPU per event rather than events per second: less at the mercy of other processes.
        "production_cpu_per_event_vs_faust_passthrough": _ratio(
            _consumer_cpu(scenarios, "scorer_production"), _consumer_cpu(scenarios, BASELINE)
        ),
    }


def _score_load_ratio(latency: dict[str, Any]) -> float | None:
    base = latency.get("steady", {}).get("p99_ms")
    loaded = [latency.get(f"loaded-{n}", {}).get("p99_ms") for n in (1, 100)]
    measured = [p for p in loaded if p is not None]
    return _ratio(max(measured), base) if measured and base else None


def targets(result: dict[str, Any]) -> list[Target]:
    """The issue's targets, each met or not with its ratio."""
    scenarios = result.get("scenarios", {})
    r = ratios(scenarios)
    found: list[Target] = []

    def at_least(name: str, ratio: float | None, bound: float, value: str) -> None:
        found.append(Target(name, value, ratio, None if ratio is None else ratio >= bound))

    production = _rate(scenarios, "scorer_production")
    at_least(
        "scorer (production model) ≥ 0.8x Faust pass-through",
        r["production_vs_faust_passthrough"],
        0.8,
        f"{production or '—'} vs {_rate(scenarios, BASELINE) or '—'} ev/s",
    )
    at_least(
        "batching ≥ 10x the per-event peer",
        r["batching_vs_per_event"],
        10.0,
        f"{production or '—'} vs {_rate(scenarios, 'per_event') or '—'} ev/s",
    )
    latency = scenarios.get("latency", {})
    p99 = latency.get("steady", {}).get("p99_ms")
    rate = latency.get("rate_events_per_s", 500)
    found.append(
        Target(
            f"p99 ≤ 100 ms at {rate:.0f} ev/s (local broker)",
            f"p99 {p99} ms" if p99 is not None else "—",
            _ratio(p99, 100.0),
            None if p99 is None else p99 <= 100.0,
        )
    )
    reload = scenarios.get("reload", {})
    gap = reload.get("largest_gap_ms")
    if gap is None:
        found.append(Target("reload gap ≤ 1 s with 0 lost, 0 twice", "—", None, None))
    else:
        versions = reload.get("tasks_per_version", {})
        clean = reload["lost"] == 0 and reload["scored_twice"] == 0 and len(versions) >= 2
        found.append(
            Target(
                "reload gap ≤ 1 s with 0 lost, 0 twice",
                f"gap {gap} ms; lost {reload['lost']}, twice {reload['scored_twice']}; "
                f"tasks per version {versions}",
                _ratio(float(gap), 1000.0),
                gap <= 1000 and clean,
            )
        )
    load = r["stream_p99_under_score_load"]
    failing = score_errors(latency)
    noted = f"; /score answered errors: {failing}" if failing else ""
    found.append(
        Target(
            "/score load raises stream p99 ≤ 1.5x",
            _score_load_value(latency) + noted,
            load,
            None if load is None or failing else load <= 1.5,
        )
    )
    return found


def score_errors(latency: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Statuses other than 200 and 503 (the queue's refusal) per /score load: then that load
    did not score, and says nothing about what scoring costs the stream."""
    errors = {}
    for key in ("http_alone", "http_under_stream"):
        for size, h in latency.get(key, {}).items():
            bad = {k: v for k, v in h.get("statuses", {}).items() if k not in ("200", "503")}
            if bad:
                errors[f"{key} {size}/request"] = bad
    return errors


def _score_load_value(latency: dict[str, Any]) -> str:
    parts = [f"alone {latency.get('steady', {}).get('p99_ms', '—')} ms"]
    for n in (1, 100):
        p99 = latency.get(f"loaded-{n}", {}).get("p99_ms")
        if p99 is not None:
            parts.append(f"{n}/request {p99} ms")
    return "p99 " + ", ".join(parts)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the result document gets besides the raw scenario results."""
    return {
        "ratios": ratios(result.get("scenarios", {})),
        "targets": [asdict(t) for t in targets(result)],
    }


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) + suffix
    return f"{value:,}{suffix}" if isinstance(value, int | float) else str(value)


def render(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=160)
    scenarios = result.get("scenarios", {})
    machine = result.get("machine", {})
    console.print(
        f"[bold]callscore bench[/bold] — {machine.get('cpus')} CPUs ({machine.get('cpu_model')}), "
        f"Python {machine.get('python')}, product {machine.get('product_commit')}; load average "
        f"{result.get('load_average', {}).get('start')} at start, "
        f"{result.get('load_average', {}).get('end')} at end"
    )
    console.print(f"data: {result.get('data_source')}; model: {result.get('production_model')}")
    console.print(f"settings (every scenario): {result.get('settings')}")
    for name, scenario in scenarios.items():
        if "error" in scenario:
            console.print(f"[red]{name} failed:[/red] {scenario['error']}")
    for load, statuses in score_errors(scenarios.get("latency", {})).items():
        console.print(f"[red]/score answered errors[/red] ({load}): {statuses}")
    _throughput_table(console, scenarios)
    _latency_table(console, scenarios.get("latency", {}))
    _http_table(console, scenarios.get("latency", {}))
    _reload_table(console, scenarios.get("reload", {}))
    _targets_table(console, result)
    if "scorer_two_workers" in scenarios:
        console.print(
            "Two workers: on this machine's "
            f"{machine.get('cpus')} cores the two workers share the CPUs with the broker and the "
            "bench, so no linear scaling can show; the row says what a second worker costs or "
            "gains here, not what it does with cores to spare."
        )


def _throughput_table(console: Console, scenarios: dict[str, Any]) -> None:
    rows = [(n, scenarios[n]) for n in THROUGHPUT_SCENARIOS if n in scenarios]
    rows = [(n, s) for n, s in rows if "error" not in s]
    if not rows:
        return
    baseline = _rate(scenarios, BASELINE)
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
    baseline_cpu = _consumer_cpu(scenarios, BASELINE)
    for name, s in rows:
        cpu = s.get("cpu_seconds_per_10k", {})
        consumer = _consumer_cpu(scenarios, name)
        table.add_row(
            THROUGHPUT_SCENARIOS[name],
            _fmt(s["events"]),
            _fmt(s["events_per_s"]),
            _fmt([r.get("events_per_s") for r in s.get("rounds", [])]),
            _fmt(_ratio(s["events_per_s"], baseline)),
            _fmt(_ratio(consumer, baseline_cpu)),
            f"{s['lost']}/{s['repeated']}",
            _fmt(s.get("mean_batch_size")),
            _fmt(s.get("scoring_ms_per_batch")),
            _fmt(consumer),
            _fmt(cpu.get("broker")),
            _fmt(s.get("peak_rss_mb")),
        )
    console.print(table)


def _latency_table(console: Console, latency: dict[str, Any]) -> None:
    if "steady" not in latency:
        return
    rate = latency["rate_events_per_s"]
    table = Table(
        title=f"End-to-end latency at {rate:.0f} events/s, production model "
        "(prospect produced → call task sent, Kafka timestamps)"
    )
    for column in ("phase", "events", "p50 ms", "p99 ms", "max ms", "lost", "producer lag ms"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    labels = {
        "warmup": "warm-up (first seconds, excluded from 'steady')",
        "steady": "steady",
        "loaded-1": "steady, /score under load (1 event/request)",
        "loaded-100": "steady, /score under load (100 events/request)",
    }
    for key, label in labels.items():
        if key in latency:
            p = latency[key]
            table.add_row(
                label,
                _fmt(p.get("events")),
                _fmt(p.get("p50_ms")),
                _fmt(p.get("p99_ms")),
                _fmt(p.get("max_ms")),
                _fmt(p.get("lost")),
                _fmt(p.get("producer_worst_lag_ms")),
            )
    console.print(table)
    console.print(
        f"worker peak RSS {_fmt(latency.get('peak_rss_mb'))} MB; its child processes (/score "
        f"pool, multiprocessing tracker) {_fmt(latency.get('score_process_peak_rss_mb'))} MB"
    )


def _http_table(console: Console, latency: dict[str, Any]) -> None:
    if "http_alone" not in latency:
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
    for key, label in (("http_alone", "/score alone"), ("http_under_stream", "beside the stream")):
        for size, h in latency.get(key, {}).items():
            table.add_row(
                label,
                size,
                _fmt(h["concurrency"]),
                _fmt(h["requests_per_s"]),
                _fmt(h["events_per_s"]),
                _fmt(h["p50_ms"]),
                _fmt(h["p99_ms"]),
                _fmt(h["statuses"]),
            )
    console.print(table)


def _reload_table(console: Console, reload: dict[str, Any]) -> None:
    if "largest_gap_ms" not in reload:
        return
    table = Table(title=f"Hot reload at {reload['rate_events_per_s']:.0f} events/s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in (
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
    ):
        table.add_row(key.replace("_", " "), _fmt(reload.get(key)))
    console.print(table)


def _targets_table(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="Targets")
    for column in ("target", "measured", "ratio", "met"):
        table.add_column(column, justify="right" if column == "ratio" else "left")
    for t in targets(result):
        met = "not measured" if t.met is None else ("met" if t.met else "NOT met")
        table.add_row(t.name, t.value, _fmt(t.ratio), met)
    console.print(table)
