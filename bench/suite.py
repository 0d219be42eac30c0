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
from callscore.factories import small_artifact
from core.local_broker import start_tansu
from core.settings import Settings

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
    result["scenarios"] = scenarios
    try:
        shown = ctx.settings("settings-check")
        result["settings"] = {name: getattr(shown, name) for name in SETTINGS_SHOWN}
        for name in only:
            log(f"{name} ...")
            began = time.monotonic()
            key = RESULT_KEY.get(name, name)
            try:
                scenarios[key] = SCENARIOS[name](ctx)
            except Exception as exc:  # one failed scenario must not cost the others
                traceback.print_exc()
                scenarios[key] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            scenarios[key]["seconds"] = round(time.monotonic() - began, 1)
            scenarios[key]["load_average_after"] = load_average()
            log(f"{name} done in {scenarios[key]['seconds']} s")
    finally:
        broker.stop()
    result["load_average"]["end"] = load_average()
    result["duration_seconds"] = round(time.monotonic() - started, 1)
    result.update(summary(result))
    return result


def settings_overrides(items: list[str]) -> dict[str, str]:
    """--set FIELD=VALUE items, each FIELD checked against Settings."""
    overrides = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or field not in Settings.model_fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with a Settings field")
        overrides[field] = value
    return overrides
