"""`callscore train`: select, evaluate, calibrate, write the model card, gate and publish."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.inspection import permutation_importance

from core.settings import Settings
from registry.artifact import (
    ArtifactMetadata,
    ModelArtifact,
    dump_artifact,
    score_quantiles,
    tier_cut_points,
)
from registry.model_topic import load_champion, next_version, publish_manifest, read_model_records
from registry.signing import build_manifest
from schemas import FEATURES, ModelManifest, TrainingWindow, feature_contract_hash
from trainer import report
from trainer.data import BANK_FULL_SHA256
from trainer.evaluation import score_metrics
from trainer.final import FinalModel, fit_final
from trainer.gate import GateDecision, gate
from trainer.selection import Selection, screen_table, select_model

Step = Any  # callable(str) -> None


@dataclass(frozen=True)
class TrainOptions:
    out: Path
    publish: bool = True
    force: bool = False
    fast: bool = False
    search_seconds: float = 30.0
    importance_rows: int = 3000
    n_jobs: int = 2


@dataclass
class TrainResult:
    metrics: dict[str, Any]
    artifact: ModelArtifact
    decision: GateDecision | None
    manifest: ModelManifest | None
    selection: Selection
    final: FinalModel
    timings: dict[str, float] = field(default_factory=dict)


def feature_comparisons(selection: Selection) -> dict[str, dict[str, float]]:
    """Screen results for the feature variants, per candidate family (same origins, same params).

    Keys: '<candidate>: pdays' -> {engineer, drop, raw};
    '<candidate>: day/month' -> {with, without};
    '<candidate>: period' -> {none, index|onehot} (same pdays/day-month/hyperparameters).
    """
    out: dict[str, dict[str, float]] = {}
    base: dict[str, dict[str, Any]] = {}
    for r in selection.screen:
        base.setdefault(r.config.candidate, r.config.params)
    without_period = {
        (r.config.candidate, r.config.pdays, r.config.calendar, str(r.config.params)): r
        for r in selection.screen
        if r.config.period == "none"
    }
    for r in selection.screen:
        c = r.config
        if c.period != "none":
            twin = without_period.get((c.candidate, c.pdays, c.calendar, str(c.params)))
            if twin is not None:
                key = f"{c.candidate}: period"
                out.setdefault(key, {}).update(
                    {"none": twin.monthly_roc_auc, c.period: r.monthly_roc_auc}
                )
            continue
        if c.params != base[c.candidate]:
            continue
        if not c.calendar:
            out.setdefault(f"{c.candidate}: pdays", {})[c.pdays] = r.monthly_roc_auc
        if c.pdays == "engineer":
            key = "with" if c.calendar else "without"
            out.setdefault(f"{c.candidate}: day/month", {})[key] = r.monthly_roc_auc
    return {k: v for k, v in out.items() if len(v) > 1}


def _importance(final: FinalModel, rows: int) -> pd.DataFrame:
    sample = final.holdout.iloc[:rows]
    y = final.holdout_y[:rows]
    result = permutation_importance(
        final.holdout_pipeline,
        sample[list(FEATURES)],
        y,
        scoring="roc_auc",
        n_repeats=3,
        random_state=0,
        n_jobs=1,
    )
    return pd.DataFrame(
        {"feature": FEATURES, "mean": result.importances_mean, "std": result.importances_std}
    ).sort_values("mean", ascending=False)


def run_training(
    settings: Settings,
    frame: pd.DataFrame,
    data_sha256: str,
    options: TrainOptions,
    step: Step | None = None,
) -> TrainResult:
    """Everything `callscore train` does after loading the data."""
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.monotonic() - clock, 2)
        clock = time.monotonic()

    records: list[Any] = []
    champion = None
    if options.publish:  # fail fast: broker and signing key are checked before training
        settings.signing_key()
        records = read_model_records(settings)
        champion = load_champion(settings, records)
        lap("read_model_topic")

    selection = select_model(frame, options.fast, options.search_seconds, step, options.n_jobs)
    lap("selection")
    best = selection.best
    final = fit_final(frame, best.config, options.n_jobs)
    if step:
        step("calibrated final model")
    lap("final_fit")

    holdout = score_metrics(final.holdout_y, final.holdout_scores)
    validation_scores = [float(v) for v in final.holdout_scores]
    cuts = tier_cut_points(
        validation_scores, settings.tier_high_fraction, settings.tier_medium_fraction
    )
    decision = gate(settings, champion, final, options.force) if options.publish else None
    version = next_version(records, settings.model_name) if options.publish else 1
    periods = frame["period"]
    metrics_flat = {
        **{k: float(v) for k, v in best.metrics().items()},
        **{f"holdout_{k}": v for k, v in holdout.items()},
    }
    metadata = ArtifactMetadata(
        model_name=settings.model_name,
        version=version,
        created_at=datetime.now(UTC),
        candidate=best.config.candidate,
        features=list(FEATURES),
        feature_contract_hash=feature_contract_hash(),
        data_rows=len(frame),
        data_sha256=data_sha256,
        training_window=TrainingWindow(
            start=str(periods.iloc[0]), end=str(periods.iloc[-1]), rows=len(frame)
        ),
        metrics=metrics_flat,
        tier_cut_points=cuts,
        sklearn_version=sklearn.__version__,
        python_version=platform.python_version(),
        validation_scores=score_quantiles(validation_scores),
    )
    artifact = ModelArtifact(final.pipeline, metadata)
    artifact_bytes = dump_artifact(artifact)
    lap("artifact")

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.joblib").write_bytes(artifact_bytes)
    importance = _importance(final, options.importance_rows)
    report.plot_roc_pr(final.holdout_y, final.holdout_scores, out)
    report.plot_gain(final.holdout_y, final.holdout_scores, out)
    report.plot_calibration(final.holdout_y, final.holdout_scores, out)
    report.plot_backtest(best.backtest.per_period, out)
    report.plot_importance(importance, out)
    lap("model_card")

    manifest = None
    if options.publish and decision is not None and decision.publish:
        manifest = build_manifest(artifact_bytes, metadata, settings)
        publish_manifest(settings, manifest)
        lap("publish")

    metrics = {
        "model_name": settings.model_name,
        "model_version": version,
        "created_at": metadata.created_at.isoformat(),
        "selected": best.config.candidate,
        "selected_config": best.config.label,
        "selection_metric": "backtest_monthly_roc_auc",
        "features": list(FEATURES),
        "data": {
            "rows": len(frame),
            "sha256": data_sha256,
            "is_uci_bank_full": data_sha256 == BANK_FULL_SHA256,
            "first_period": metadata.training_window.start,
            "last_period": metadata.training_window.end,
            "positive_rate": float(np.mean(frame["y"] == "yes")),
        },
        "candidates": {
            name: {**{k: float(v) for k, v in ev.metrics().items()}, "config": ev.config.label}
            for name, ev in selection.candidates.items()
        },
        "feature_comparisons": feature_comparisons(selection),
        "search": {
            "time_budget_seconds": options.search_seconds,
            "fast": options.fast,
            "skipped_configs": selection.skipped_configs,
            "screen": screen_table(selection.screen).to_dict(orient="records"),
        },
        "backtest_per_month": best.backtest.per_period.to_dict(orient="records"),
        "holdout": {
            **holdout,
            "periods": sorted(set(final.holdout["period"])),
            "rows": len(final.holdout_y),
            "trained_rows": final.train_rows,
        },
        "tier_cut_points": cuts.model_dump(),
        "gate": decision.as_dict() if decision else {"publish": False, "reason": "--no-publish"},
        "published": manifest is not None,
        "permutation_importance": importance.to_dict(orient="records"),
        "timings_seconds": timings,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    candidates_table = (
        pd.DataFrame(metrics["candidates"]).T.reset_index(names="candidate").drop(columns="config")
    )
    report.write_report(
        out,
        metrics,
        {
            "Candidates (A: random CV; B: rolling monthly backtest)": candidates_table,
            "Feature variants (screening origins)": pd.DataFrame(
                [
                    {"comparison": k, **{kk: vv for kk, vv in v.items()}}
                    for k, v in metrics["feature_comparisons"].items()
                ]
            ),
            "Search screen": screen_table(selection.screen),
            "Backtest per month (selected)": best.backtest.per_period,
            "Holdout": pd.DataFrame(
                [metrics["holdout"] | {"periods": ", ".join(metrics["holdout"]["periods"])}]
            ),
        },
    )
    timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 2)
    return TrainResult(metrics, artifact, decision, manifest, selection, final, timings)
