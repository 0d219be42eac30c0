"""The side-by-side suite: every scenario on one broker the suite starts, each on fresh topics,
with the same payloads and Settings; one result document with the machine and the load."""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import latency, reload, throughput
from bench.context import Context, Options
from bench.machine import load_average, machine_info
from bench.payloads import Payloads
from bench.production_model import bank_data, production_artifact
from bench.report import summary
from core.local_broker import start_tansu
from core.settings import Settings
from testkit.factories import small_artifact

Scenario = Callable[[Context], dict[str, Any]]

# In running order. "latency" includes /score (alone and beside the stream) unless only
# "latency_only" is asked for.
SCENARIOS: dict[str, Scenario] = {
    "confluent_loop": throughput.confluent_loop,
    "faust_passthrough": throughput.faust_passthrough,
    "scorer_production": throughput.scorer_production,
    "scorer_small": throughput.scorer_small,
    "scorer_two_workers": throughput.scorer_two_workers,
    "per_event": throughput.per_event,
    "latency": latency.latency_and_http,
    "latency_only": latency.latency_only,
    "reload": reload.reload_under_load,
}
DEFAULT = [name for name in SCENARIOS if name != "latency_only"]
# Run `Options.rounds` times, interleaved, best round reported.
THROUGHPUT = {
    "confluent_loop",
    "faust_passthrough",
    "scorer_production",
    "scorer_small",
    "scorer_two_workers",
    "per_event",
}
# Where a scenario's result goes in the document (latency_only reports as "latency").
RESULT_KEY = {"latency_only": "latency"}
SETTINGS_SHOWN = (
    "partitions",
    "batch_max_size",
    "batch_max_wait_seconds",
    "fetch_max_wait_ms",
    "producer_linger_ms",
    "commit_interval_seconds",
    "session_timeout_seconds",
    "http_score_processes",
    "http_score_queue",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(
    only: list[str], options: Options, overrides: dict[str, str], data_path: Path | None = None
) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average": {"start": load_average()},
        "options": options.as_dict(),
        "overrides": overrides,
    }
    data = bank_data(data_path)
    result["data_source"] = data.source
    log(f"data: {data.source}")
    production, cached = production_artifact(data, log)
    result["production_model"] = (
        f"{production.metadata.candidate} ({type(production.pipeline).__name__}), "
        f"holdout ROC AUC {production.metadata.metrics.get('holdout_roc_auc', 0):.3f}"
        f"{', cached' if cached else ', trained now'}"
    )
    broker = start_tansu()
    workdir = Path(tempfile.mkdtemp(prefix="callscore-bench-"))
    result["workdir"] = str(workdir)
    ctx = Context(
        broker=broker,
        workdir=workdir,
        options=options,
        overrides=overrides,
        payloads=Payloads(data.frame),
        production=production,
        small=small_artifact(1),
        data_source=data.source,
    )
    scenarios: dict[str, Any] = {}
    rounds: dict[str, list[dict[str, Any]]] = {}
    result["scenarios"] = scenarios
    try:
        shown = ctx.settings("settings-check")
        result["settings"] = {name: getattr(shown, name) for name in SETTINGS_SHOWN}
        throughput_names = [n for n in only if n in THROUGHPUT]
        for round_number in range(1, options.rounds + 1):
            for name in throughput_names:
                outcome = _run_one(ctx, name, f" (round {round_number}/{options.rounds})")
                rounds.setdefault(name, []).append(outcome)
        for name in throughput_names:
            scenarios[name] = best_round(rounds[name])
        for name in only:
            if name not in THROUGHPUT:
                scenarios[RESULT_KEY.get(name, name)] = _run_one(ctx, name)
    finally:
        broker.stop()
    result["load_average"]["end"] = load_average()
    result["duration_seconds"] = round(time.monotonic() - started, 1)
    result.update(summary(result))
    return result


def _run_one(ctx: Context, name: str, label: str = "") -> dict[str, Any]:
    log(f"{name}{label} ...")
    began = time.monotonic()
    try:
        outcome = SCENARIOS[name](ctx)
    except Exception as exc:  # one failed scenario must not cost the others
        traceback.print_exc()
        outcome = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    outcome["seconds"] = round(time.monotonic() - began, 1)
    outcome["load_average_after"] = load_average()
    log(f"{name}{label} done in {outcome['seconds']} s")
    return outcome


def best_round(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the highest rate, with every round's rate and CPU beside it.

    Other processes can only slow a round down, so the best one is the least disturbed
    (timeit's rule); a failed round counts only if every round failed.
    """
    measured = [o for o in outcomes if o.get("events_per_s")]
    best = dict(max(measured, key=lambda o: o["events_per_s"]) if measured else outcomes[-1])
    best["rounds"] = [
        {
            key: o.get(key)
            for key in ("events_per_s", "cpu_seconds_per_10k", "lost", "repeated", "error")
            if key in o
        }
        for o in outcomes
    ]
    return best


def settings_overrides(items: list[str]) -> dict[str, str]:
    """--set FIELD=VALUE items, each FIELD checked against Settings."""
    overrides = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or field not in Settings.model_fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with a Settings field")
        overrides[field] = value
    return overrides
