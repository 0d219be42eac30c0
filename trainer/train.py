"""`callscore train`: select, evaluate, calibrate, write the model card, gate and publish.

The training data is the base file (cut at Settings.base_data_until) followed by the labelled
outcomes on the prediction-log and outcome topics (trainer.outcomes).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.metrics import roc_auc_score

from core.errors import BrokerUnavailableError
from core.settings import Settings
from feedback.label_columns import LabelColumns, LabelCounts
from registry.artifact import (
    ArtifactMetadata,
    ModelArtifact,
    dump_artifact,
)
from registry.keys import load_signing_key, trusted_keys
from registry.model_topic import load_champion, next_version, publish_manifest, read_model_records
from registry.serving_plan import compile_plan
from registry.signing import build_manifest
from schemas import FEATURES, ModelManifest
from trainer import card_report
from trainer.candidates import REFERENCE_CONFIGS, REFERENCE_SELECTED
from trainer.data import BANK_FULL_SHA256, labels
from trainer.evaluation import SELECTION_METRIC, random_cv_auc, rolling_backtest, score_metrics
from trainer.final import HOLDOUT_METRIC_PREFIX, FinalModel, fit_final
from trainer.gate import GateDecision, GateSkipped, gate
from trainer.history import read_label_columns
from trainer.metadata import build_metadata, window_of
from trainer.model_card import (
    ARTIFACT_FILE,
    CARD_FILE,
    BacktestMonth,
    CandidateMetrics,
    DataSources,
    DataSummary,
    HoldoutSummary,
    ImportanceRow,
    ModelCard,
    ScreenRow,
    SearchSummary,
)
from trainer.outcomes import TrainingData, training_data
from trainer.selection import (
    CandidateEvaluation,
    Selection,
    Step,
    feature_comparisons,
    screen_table,
    screening_origins,
    select_model,
)

DEFAULT_REASON = "callscore train"


@dataclass(frozen=True)
class TrainOptions:
    out: Path
    publish: bool = True
    force: bool = False
    fast: bool = False  # the tiny search space (tests, demos)
    # Only the reference selected configuration, no search (the scheduler's retrains).
    reference: bool = False
    search_seconds: float = 30.0
    importance_rows: int = 3000
    n_jobs: int = 2
    outcomes: bool = True  # append the labelled outcomes on the topics to the base data
    outcomes_lake: str | None = None  # read those outcomes from this exported lake instead
    reason: str = DEFAULT_REASON  # why this version exists: recorded in its manifest

    def __post_init__(self) -> None:
        if self.fast and self.reference:
            raise ValueError("TrainOptions: choose fast or reference, not both")


@dataclass
class TrainResult:
    card: ModelCard
    artifact: ModelArtifact
    manifest: ModelManifest | None
    selection: Selection
    final: FinalModel

    @property
    def decision(self) -> GateDecision | None:
        """The gate's decision; None when publication was off and no gate ran."""
        return self.card.gate if isinstance(self.card.gate, GateDecision) else None


@dataclass(frozen=True)
class ModelTopicState:
    """The model topic before this training: the champion to beat and the next version number."""

    champion: tuple[ModelManifest, ModelArtifact] | None = None
    next_version: int = 1


@dataclass(frozen=True)
class BuiltArtifact:
    artifact: ModelArtifact
    data: bytes
    holdout: HoldoutSummary


class Timings:
    """Seconds per step for the card; a step that did not run has no entry."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - started, 2)


def run_training(
    settings: Settings,
    frame: pd.DataFrame,
    data_sha256: str,
    options: TrainOptions,
    step: Step | None = None,
    labels: LabelColumns | None = None,
) -> TrainResult:
    """Everything `callscore train` does after loading the base data.

    `labels`: the labelled outcomes already read with their features; None reads them (the
    lake and the topics' tail) unless `options.outcomes` is off.
    """
    timings = Timings()
    topic = ModelTopicState()
    if options.publish:  # fail fast: broker and signing key are checked before training
        with timings.step("read_model_topic"):
            topic = _read_model_topic(settings)
    with timings.step("training_data"):
        data = _training_data(settings, frame, options, labels)
    frame = data.frame
    with timings.step("selection"):
        selection = _select(frame, options, step)
    with timings.step("final_fit"):
        final = _fit_final(frame, selection.best, options, step)
    decision: GateDecision | GateSkipped = GateSkipped()
    if options.publish:
        with timings.step("gate"):
            decision = gate(settings, topic.champion, final, options.force)
    with timings.step("artifact"):
        built = _build_artifact(
            settings, data, data_sha256, selection.best, final, topic, options, decision
        )
    with timings.step("model_card"):
        importance = _write_artifact_and_charts(options, built, selection.best, final)
    manifest = None
    if decision.publish:
        with timings.step("publish"):
            manifest = _publish(settings, built)
    card = _model_card(
        data, options, selection, built, decision, manifest, importance, timings.seconds
    )
    _write_card(card, options.out)
    return TrainResult(card, built.artifact, manifest, selection, final)


def _training_data(
    settings: Settings, bank: pd.DataFrame, options: TrainOptions, labels: LabelColumns | None
) -> TrainingData:
    if options.outcomes and labels is None:
        try:
            labels = read_label_columns(settings, options.outcomes_lake, features=True)
        except BrokerUnavailableError as exc:
            raise BrokerUnavailableError(
                f"{exc}; pass --no-outcomes to train on the base data only"
            ) from None
    return training_data(
        bank,
        labels if options.outcomes else None,
        settings.base_data_until,
        settings.training_window_months,
    )


def _select(frame: pd.DataFrame, options: TrainOptions, step: Step | None) -> Selection:
    if options.reference:
        return reference_selection(frame, step, options.n_jobs)
    return select_model(frame, options.fast, options.search_seconds, step, options.n_jobs)


def reference_selection(
    frame: pd.DataFrame, step: Step | None = None, n_jobs: int = 2
) -> Selection:
    """The reference run's selected configuration, evaluated like the fast path's finalists.

    No search: the configuration was chosen once on the full data (docs/model-card.md); a
    scheduled retrain only refits it on newer data, so a replay can retrain every month.
    """
    config = REFERENCE_CONFIGS[REFERENCE_SELECTED]
    origins = screening_origins(frame)
    backtest = rolling_backtest(frame, config.build, origins=origins, n_jobs=n_jobs)
    if step:
        step(f"{config.candidate}: backtest")
    cv = random_cv_auc(frame, config.build, folds=3, n_jobs=n_jobs)
    if step:
        step(f"{config.candidate}: random CV")
    evaluation = CandidateEvaluation(config, backtest, cv)
    return Selection([], {config.candidate: evaluation}, config.candidate, 0)


def _read_model_topic(settings: Settings) -> ModelTopicState:
    load_signing_key(settings)  # to sign the new version
    keys = trusted_keys(settings)  # to verify the champion and count only trusted versions
    records = read_model_records(settings)
    return ModelTopicState(
        load_champion(settings, records), next_version(records, settings.model_name, keys)
    )


def _fit_final(
    frame: pd.DataFrame, best: CandidateEvaluation, options: TrainOptions, step: Step | None
) -> FinalModel:
    final = fit_final(frame, best.config, options.n_jobs)
    if step:
        step("calibrated final model")
    return final


def _build_artifact(
    settings: Settings,
    data: TrainingData,
    data_sha256: str,
    best: CandidateEvaluation,
    final: FinalModel,
    topic: ModelTopicState,
    options: TrainOptions,
    decision: GateDecision | GateSkipped,
) -> BuiltArtifact:
    frame = data.frame
    holdout = score_metrics(final.holdout_y, final.holdout_scores)
    metrics = {
        **best.metrics(),
        **{HOLDOUT_METRIC_PREFIX + k: v for k, v in holdout.items()},
        **(decision.metrics() if isinstance(decision, GateDecision) else {}),
    }
    metadata = build_metadata(
        model_name=settings.model_name,
        version=topic.next_version,
        candidate=best.config.candidate,
        data_rows=len(frame),
        data_sha256=data_sha256,
        window=window_of(frame),
        metrics=metrics,
        # The holdout is the newest labelled population and the one the tiers were cut on.
        validation=final.holdout,
        validation_scores=final.holdout_scores,
        tier_fractions=(settings.tier_high_fraction, settings.tier_medium_fraction),
        reason=options.reason,
        labelled_until=data.labelled_until,
    )
    artifact = ModelArtifact(final.pipeline, metadata)
    return BuiltArtifact(artifact, dump_artifact(artifact), _holdout_summary(final, holdout))


def _holdout_summary(final: FinalModel, scores: dict[str, float]) -> HoldoutSummary:
    return HoldoutSummary.model_validate(
        {
            **scores,
            "periods": sorted(set(final.holdout["period"])),
            "rows": len(final.holdout_y),
            "trained_rows": final.train_rows,
        }
    )


def _write_artifact_and_charts(
    options: TrainOptions, built: BuiltArtifact, best: CandidateEvaluation, final: FinalModel
) -> list[ImportanceRow]:
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    (out / ARTIFACT_FILE).write_bytes(built.data)
    importance = _importance(final, options.importance_rows)
    card_report.plot_roc_pr(final.holdout_y, final.holdout_scores, out)
    card_report.plot_gain(final.holdout_y, final.holdout_scores, out)
    card_report.plot_calibration(final.holdout_y, final.holdout_scores, out)
    card_report.plot_backtest(best.backtest.per_period, out)
    card_report.plot_importance(importance, out)
    return ImportanceRow.from_table(importance)


def _importance(final: FinalModel, rows: int) -> pd.DataFrame:
    """Permutation importance (ROC-AUC) on the holdout, scored through the compiled serving
    plan when the pipeline compiles: the same probabilities without the pipeline's per-call
    cost, which the 46 scorings (15 features x 3 repeats + the baseline) paid for a forest."""
    sample = final.holdout.iloc[:rows]
    y = final.holdout_y[:rows]
    plan = compile_plan(final.holdout_pipeline)

    def roc_auc(pipeline: Any, frame: pd.DataFrame, truth: np.ndarray) -> float:
        if plan is None:
            scores = pipeline.predict_proba(frame)[:, 1]
        else:
            scores = plan.predict({name: frame[name].to_numpy() for name in FEATURES})
        return float(roc_auc_score(truth, scores))

    result = permutation_importance(
        final.holdout_pipeline,
        sample[list(FEATURES)],
        y,
        scoring=roc_auc,
        n_repeats=3,
        random_state=0,
        n_jobs=1,
    )
    return pd.DataFrame(
        {"feature": FEATURES, "mean": result.importances_mean, "std": result.importances_std}
    ).sort_values("mean", ascending=False)


def _publish(settings: Settings, built: BuiltArtifact) -> ModelManifest:
    manifest = build_manifest(built.data, built.artifact.metadata, settings)
    return publish_manifest(settings, manifest)  # as published: next sequence, signed


def _model_card(
    data: TrainingData,
    options: TrainOptions,
    selection: Selection,
    built: BuiltArtifact,
    decision: GateDecision | GateSkipped,
    manifest: ModelManifest | None,
    importance: list[ImportanceRow],
    timings: dict[str, float],
) -> ModelCard:
    best = selection.best
    metadata = built.artifact.metadata
    return ModelCard(
        model_name=metadata.model_name,
        model_version=metadata.version,
        created_at=metadata.created_at,
        reason=metadata.reason,
        selected=best.config.candidate,
        selected_config=best.config.label,
        selection_metric=SELECTION_METRIC,
        features=metadata.features,
        data=_data_summary(data.frame, metadata),
        sources=_data_sources(data),
        candidates={name: _candidate(ev) for name, ev in selection.candidates.items()},
        feature_comparisons=feature_comparisons(selection),
        search=_search_summary(selection, options),
        backtest_per_month=BacktestMonth.from_table(best.backtest.per_period),
        holdout=built.holdout,
        tier_cut_points=metadata.tier_cut_points,
        gate=decision,
        published=manifest is not None,
        permutation_importance=importance,
        timings_seconds=timings,
    )


def _search_summary(selection: Selection, options: TrainOptions) -> SearchSummary:
    return SearchSummary(
        time_budget_seconds=options.search_seconds,
        fast=options.fast,
        reference=options.reference,
        skipped_configs=selection.skipped_configs,
        screen=ScreenRow.from_table(screen_table(selection.screen)),
    )


def _data_summary(frame: pd.DataFrame, metadata: ArtifactMetadata) -> DataSummary:
    return DataSummary(
        rows=metadata.data_rows,
        sha256=metadata.data_sha256,
        is_uci_bank_full=metadata.data_sha256 == BANK_FULL_SHA256,
        first_period=metadata.training_window.start,
        last_period=metadata.training_window.end,
        positive_rate=float(labels(frame).mean()),
    )


def _data_sources(data: TrainingData) -> DataSources:
    labels = data.labels
    counts = labels.counts if labels is not None else LabelCounts()
    return DataSources(
        base_rows=data.base_rows,
        base_data_until=data.base_data_until,
        base_periods=data.base_periods,
        outcomes_read=labels is not None,
        outcome_rows=data.outcome_rows,
        outcome_periods=data.outcome_periods,
        labelled_until=data.labelled_until,
        predictions=counts.predictions,
        invalid_predictions=counts.invalid_predictions,
        outcomes=counts.outcomes,
        invalid_outcomes=counts.invalid_outcomes,
        unmatched_outcomes=counts.unmatched,
        overlapping_periods=data.overlapping_periods,
        invalid_examples=labels.errors if labels is not None else [],
        window_months=data.window_months,
        rows_before_window=data.rows_before_window,
    )


def _candidate(evaluation: CandidateEvaluation) -> CandidateMetrics:
    return CandidateMetrics.model_validate(
        {**evaluation.metrics(), "config": evaluation.config.label}
    )


def _write_card(card: ModelCard, out: Path) -> None:
    card.write(out / CARD_FILE)
    card_report.write_report(out, card)
