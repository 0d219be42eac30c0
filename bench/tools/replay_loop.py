"""The whole feedback loop on real data: replay UCI months through scorer, outcomes, monitor,
scheduled retraining and recalibration, then report per month what happened.

    .venv/bin/python -m bench.tools.replay_loop [--from 2009-06] [--months 18] [--month-seconds 30]
        [--outcome-delay 7d] [--set FIELD=VALUE ...] [--broker kafka|tansu]

On a fresh local broker (Apache Kafka; `--broker tansu` for the fallback, which cannot carry a
replay's minutes of live traffic: docs/local-broker.md) it trains v1 on the base data before --from
(`callscore train --search reference --no-outcomes`), starts `callscore stream`, `callscore monitor`
and `callscore schedule` as an operator would, replays the months with `callscore simulate`'s API
(one month of event time per --month-seconds of wall time, outcomes --outcome-delay later in event
time), waits for the last outcomes, and then reads the topics back. Per month: online ROC-AUC,
conversion by tier, mean served score vs observed rate and the same events' mean score without the
online recalibration, the versions that served and why each was published. Beside it, the offline
rolling backtest with monthly retraining of the same pipeline on the same months. Prints tables,
writes bench/results/replay_loop.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.broker import add_broker_option, start_broker
from bench.overrides import add_set_option, overrides_from
from bench.results import write_results
from callscore.commands.arguments import parse_delay
from callscore.processes import CALLSCORE
from callscore.simulator.plan import ReplayOptions, plan_replay
from callscore.simulator.publish import run_replay
from core.kafka import ensure_topics
from core.local_broker import BrokerKind, free_port
from core.settings import Settings
from feedback.quality import period_of, quality
from registry.model_topic import read_model_records
from registry.signing import verify_and_load
from schemas import FEATURES, ModelManifest
from testkit.harness import MonitorWorker, StreamWorker, isolated_settings
from trainer.cadence import run_cadences
from trainer.data import load_bank, resolve_data_path
from trainer.history import read_labels

console = Console(width=160)
DAY = 86_400.0
# Replay settings: a monthly interval in event time, and quality/recalibration thresholds sized to
# the 200-800 outcomes a month of bank-full has after 2009-05.
LOOP_SETTINGS: dict[str, Any] = {
    "retrain_interval_seconds": 30 * DAY,
    "retrain_min_new_outcomes": 2_000,
    "quality_min_outcomes": 150,
    "recalibration_min_outcomes": 150,
    "recalibration_window": 600,
    "schedule_check_seconds": 2.0,
    "partitions": 2,
}


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCORE_")}
    return env | settings.as_env()


def _train_base(settings: Settings, data: Path, workdir: Path) -> None:
    argv = [CALLSCORE, "train", "--data", str(data), "--out", str(workdir / "base-card")]
    argv += ["--search", "reference", "--no-outcomes"]
    with open(workdir / "train.log", "wb") as log:
        if subprocess.run(argv, env=_env(settings), stdout=log, stderr=log).returncode:
            raise SystemExit(f"base training failed: see {workdir / 'train.log'}")


def _scheduler(settings: Settings, data: Path, workdir: Path) -> subprocess.Popen[bytes]:
    argv = [CALLSCORE, "schedule", "--data", str(data), "--out", str(workdir / "runs")]
    log = open(workdir / "schedule.log", "wb")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen(argv, env=_env(settings), stdout=log, stderr=log)


def _wait_for_labels(settings: Settings, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(read_labels(settings).labelled) >= expected:
            return
        time.sleep(2)


def _served_manifests(settings: Settings) -> dict[int, ModelManifest]:
    records = read_model_records(settings)
    manifests: dict[int, ModelManifest] = {}
    for record in records:
        if record.manifest is not None:
            manifests.setdefault(record.manifest.version, record.manifest)
    return manifests


def _uncalibrated_scores(
    settings: Settings, manifests: dict[int, ModelManifest], labels: Any
) -> dict[str, float]:
    """Each recalibrated prediction's score without its online calibration (same pipeline)."""
    by_version: dict[int, list[Any]] = defaultdict(list)
    for item in labels:
        if manifests[item.prediction.model_version].calibration is not None:
            by_version[item.prediction.model_version].append(item.prediction)
    raw: dict[str, float] = {}
    for version, predictions in by_version.items():
        artifact = verify_and_load(manifests[version], settings)
        frame = pd.DataFrame([p.features for p in predictions], columns=list(FEATURES))
        scores = artifact.pipeline.predict_proba(frame)[:, 1]
        raw.update({p.event_id: float(s) for p, s in zip(predictions, scores, strict=True)})
    return raw


def _monthly_rows(
    settings: Settings, labels: Any, manifests: dict[int, ModelManifest]
) -> list[dict[str, Any]]:
    raw = _uncalibrated_scores(settings, manifests, labels)
    by_month: dict[str, list[Any]] = defaultdict(list)
    for item in labels:
        by_month[period_of(item.prediction)].append(item)
    rows = []
    for month, items in sorted(by_month.items()):
        q = quality(items)
        uncalibrated = np.array(
            [raw.get(i.prediction.event_id, i.prediction.score) for i in items], dtype=float
        )
        y = np.array([i.outcome.subscribed for i in items], dtype=float)
        versions = sorted({i.prediction.model_version for i in items})
        rows.append(
            {
                "month": month,
                "outcomes": q.outcomes,
                "observed_rate": q.observed_rate,
                "mean_score": q.mean_score,
                "mean_score_without_recalibration": float(np.mean(uncalibrated)),
                "roc_auc": q.roc_auc,
                "brier": q.brier,
                "brier_without_recalibration": float(np.mean((uncalibrated - y) ** 2)),
                "conversion": {t: c.rate for t, c in q.conversion_by_tier.items()},
                "calls": {t: c.calls for t, c in q.conversion_by_tier.items()},
                "versions": versions,
            }
        )
    return rows


def _offline_backtest(frame: pd.DataFrame, start: str) -> dict[str, dict[str, float]]:
    (result,) = run_cadences(frame, ["1"])  # the reference selected pipeline, as retrained here
    table = result.backtest.per_period
    table = table[table["period"] >= start]
    return {
        str(row["period"]): {
            "roc_auc": float(row["roc_auc"]),
            "mean_score": float(row["mean_score"]),
            "positive_rate": float(row["positive_rate"]),
        }
        for row in table.to_dict(orient="records")
    }


def run(
    start: str,
    months: int | None,
    month_seconds: float,
    delay: str,
    overrides: dict[str, str],
    kind: BrokerKind = "kafka",
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="replay-loop-"))
    broker = start_broker(kind, log_dir=str(workdir))
    processes: list[Any] = []
    try:
        settings = isolated_settings(
            "replay",
            workdir,
            base_data_until=start,
            http_port=free_port(),
            http_host="127.0.0.1",
            monitor_http_port=free_port(),
            streamer_app_id="replay-scorer",
            streamer_data_dir=workdir / "faust",
            **{**broker.client_settings(), **LOOP_SETTINGS, **overrides},
        )
        data = resolve_data_path(None, settings)
        frame, _sha = load_bank(data)
        ensure_topics(settings)
        console.print(
            f"[bold]replay from {start}[/]: base v1 on rows before {start}; work dir {workdir}"
        )
        started = time.monotonic()
        _train_base(settings, data, workdir)
        console.print(f"v1 trained and published in {time.monotonic() - started:.0f} s")

        scorer = StreamWorker(settings, workdir / "stream.log")
        monitor = MonitorWorker(settings, workdir / "monitor.log")
        processes += [scorer, monitor]
        scorer.wait_ready(120)
        schedule = _scheduler(settings, data, workdir)

        # One event and one outcome per row, as the loop's earlier measurements: the queue's
        # extra traffic (repeats, late events, objections, slow calls) would open no label.
        options = ReplayOptions(
            start=start,
            months=months,
            outcome_delay=parse_delay(delay),
            repeat_rate=0.0,
            late_rate=0.0,
            do_not_call_rate=0.0,
            slow_call_rate=0.0,
        )
        plan = plan_replay(frame, options)
        events = sum(1 for r in plan if r.kind == "event")
        speedup = 30 * DAY / month_seconds
        console.print(
            f"replaying {events} events and their outcomes, {month_seconds:.0f} s per month"
        )
        replay_started = time.monotonic()
        run_replay(settings, plan, speedup, on_month=lambda m, _c, _s: console.print(f"  {m}"))
        replay_seconds = time.monotonic() - replay_started
        _wait_for_labels(settings, events, timeout=180)
        time.sleep(3 * settings.schedule_check_seconds)  # the last decisions
        schedule.terminate()
        schedule.wait(30)

        labels = read_labels(settings).labelled
        manifests = _served_manifests(settings)
        monthly = _monthly_rows(settings, labels, manifests)
        versions = [
            {
                "version": m.version,
                "reason": m.reason,
                "labelled_until": m.labelled_until.isoformat() if m.labelled_until else None,
                "training_window": f"{m.training_window.start}..{m.training_window.end}",
                "calibrated": m.calibration is not None,
            }
            for m in manifests.values()
        ]
        # `callscore schedule` logs one line per decision: "<time> <LEVEL> schedule: ...".
        decisions = [
            "schedule: " + line.split(" schedule: ", 1)[1]
            for line in (workdir / "schedule.log").read_text(errors="replace").splitlines()
            if " schedule: " in line
        ]
        offline = _offline_backtest(frame, start)
    finally:
        for process in processes:
            process.stop()
        broker.stop()
    return {
        "broker": broker.origin,
        "from": start,
        "months": len(monthly),
        "events": events,
        "replay_seconds": round(replay_seconds, 1),
        "month_seconds": month_seconds,
        "outcome_delay": delay,
        "settings": {k: getattr(settings, k) for k in {**LOOP_SETTINGS, **overrides}},
        "monthly": monthly,
        "versions": versions,
        "decisions": decisions,
        "offline_backtest_monthly_retrain": offline,
        "workdir": str(workdir),
    }


def summary(result: dict[str, Any]) -> dict[str, float]:
    """Row-weighted over the months: per-month ROC-AUC and |mean score - observed rate|."""
    offline = result["offline_backtest_monthly_retrain"]
    months = [m for m in result["monthly"] if m["roc_auc"] is not None and m["month"] in offline]
    weights = np.array([m["outcomes"] for m in months], dtype=float)

    def weighted(values: list[float]) -> float:
        return round(float(np.average(values, weights=weights)), 4)

    observed = [m["observed_rate"] for m in months]
    return {
        "online_monthly_roc_auc": weighted([m["roc_auc"] for m in months]),
        "offline_monthly_roc_auc": weighted([offline[m["month"]]["roc_auc"] for m in months]),
        "served_calibration_gap": weighted(
            [abs(m["mean_score"] - o) for m, o in zip(months, observed, strict=True)]
        ),
        "without_recalibration_gap": weighted(
            [
                abs(m["mean_score_without_recalibration"] - o)
                for m, o in zip(months, observed, strict=True)
            ]
        ),
        "offline_calibration_gap": weighted(
            [
                abs(offline[m["month"]]["mean_score"] - o)
                for m, o in zip(months, observed, strict=True)
            ]
        ),
        "served_brier": weighted([m["brier"] for m in months]),
        "without_recalibration_brier": weighted([m["brier_without_recalibration"] for m in months]),
        "recalibrations": sum("recalibration of" in v["reason"] for v in result["versions"]),
        "retrains_published": sum(
            "-> published" in d and d.startswith("schedule: retrain") for d in result["decisions"]
        ),
        "retrains_refused": sum("-> not published" in d for d in result["decisions"]),
    }


def _fmt(value: float | None) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"
    )


def print_tables(result: dict[str, Any]) -> None:
    table = Table(
        title=f"Replay from {result['from']}, {result['months']} months: "
        "online (as served) vs offline backtest"
    )
    for column in (
        "month",
        "n",
        "observed",
        "mean score",
        "w/o recal",
        "AUC online",
        "AUC offline",
        "offline mean",
        "conv high",
        "conv med",
        "conv low",
        "versions",
    ):
        table.add_column(column, justify="right")
    offline = result["offline_backtest_monthly_retrain"]
    for row in result["monthly"]:
        off = offline.get(row["month"], {})
        table.add_row(
            row["month"],
            str(row["outcomes"]),
            _fmt(row["observed_rate"]),
            _fmt(row["mean_score"]),
            _fmt(row["mean_score_without_recalibration"]),
            _fmt(row["roc_auc"]),
            _fmt(off.get("roc_auc")),
            _fmt(off.get("mean_score")),
            _fmt(row["conversion"]["high"]),
            _fmt(row["conversion"]["medium"]),
            _fmt(row["conversion"]["low"]),
            ",".join(f"v{v}" for v in row["versions"]),
        )
    console.print(table)
    versions = Table(title="Published versions and why")
    for column in ("version", "window", "labelled until", "calibrated", "reason"):
        versions.add_column(column)
    for v in result["versions"]:
        versions.add_row(
            f"v{v['version']}",
            v["training_window"],
            str(v["labelled_until"] or "-")[:10],
            "yes" if v["calibrated"] else "",
            v["reason"],
        )
    console.print(versions)
    console.print(result["summary"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="start", default="2009-06")
    parser.add_argument("--months", type=int, default=None, help="default: to the end of the file")
    parser.add_argument("--month-seconds", type=float, default=30.0)
    parser.add_argument("--outcome-delay", default="7d")
    add_set_option(parser)
    add_broker_option(parser)
    args = parser.parse_args()
    overrides = overrides_from(args)
    result = run(
        args.start, args.months, args.month_seconds, args.outcome_delay, overrides, args.broker
    )
    result["summary"] = summary(result)
    print_tables(result)
    print(write_results("replay_loop", result))


if __name__ == "__main__":
    main()
