"""The model card: metrics.json written from the typed card reads back equal, in the same format."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from schemas import FEATURES, TierCutPoints
from trainer.gate import GateSkipped, decide
from trainer.model_card import (
    BacktestMonth,
    CandidateMetrics,
    DataSummary,
    HoldoutSummary,
    ImportanceRow,
    ModelCard,
    ScreenRow,
    SearchSummary,
)
from trainer.selection import CANDIDATE_METRICS


def candidate(auc: float, config: str) -> CandidateMetrics:
    return CandidateMetrics(
        random_cv_roc_auc=auc + 0.1,
        backtest_monthly_roc_auc=auc,
        backtest_roc_auc=auc + 0.05,
        backtest_pr_auc=0.4,
        backtest_lift_top_decile=3.1,
        brier=0.11,
        backtest_mean_score=0.12,
        backtest_positive_rate=0.15,
        backtest_rows=507.0,
        config=config,
    )


def month(period: str, roc_auc: float) -> BacktestMonth:
    return BacktestMonth(
        period=period,
        rows=88,
        positives=12,
        roc_auc=roc_auc,
        mean_score=0.19,
        positive_rate=0.14,
        trained_rows=812,
        retrained=True,
    )


def card(**updates: object) -> ModelCard:
    base = ModelCard(
        model_name="term-deposit",
        model_version=3,
        created_at=datetime(2026, 3, 4, 10, 0, 0, 123456, tzinfo=UTC),
        selected="random_forest",
        selected_config="random_forest[pdays=engineer; no day/month; max_depth=6]",
        selection_metric="backtest_monthly_roc_auc",
        features=list(FEATURES),
        data=DataSummary(
            rows=2500,
            sha256="0" * 64,
            is_uci_bank_full=False,
            first_period="2008-05",
            last_period="2010-11",
            positive_rate=0.2656,
        ),
        candidates={
            "logistic": candidate(0.73, "logistic[C=0.1]"),
            "random_forest": candidate(0.74, "random_forest[max_depth=6]"),
        },
        feature_comparisons={"logistic: pdays": {"engineer": 0.60, "drop": 0.59}},
        search=SearchSummary(
            time_budget_seconds=30.0,
            fast=True,
            skipped_configs=2,
            screen=[
                ScreenRow(
                    candidate="logistic",
                    pdays="engineer",
                    day_month=False,
                    period="none",
                    params="C=0.1",
                    screen_monthly_roc_auc=0.73,
                    screen_pooled_roc_auc=0.75,
                    seconds=0.47,
                )
            ],
        ),
        backtest_per_month=[month("2009-03", 0.78), month("2009-04", 0.70)],
        holdout=HoldoutSummary(
            roc_auc=0.68,
            pr_auc=0.52,
            lift_top_decile=1.94,
            brier=0.22,
            mean_score=0.21,
            positive_rate=0.34,
            periods=["2009-11", "2009-12"],
            rows=1070,
            trained_rows=1430,
        ),
        tier_cut_points=TierCutPoints(high=0.42, medium=0.25),
        gate=decide(0.68, 0.70, 0.005, champion_version=2),
        published=False,
        permutation_importance=[ImportanceRow(feature="housing", mean=0.05, std=0.01)],
        timings_seconds={"selection": 4.74, "final_fit": 0.96},
    )
    return base.model_copy(update=updates)


def test_written_card_reads_back_equal(tmp_path):
    for written in (card(), card(gate=GateSkipped(), model_version=1)):
        path = tmp_path / "metrics.json"
        written.write(path)
        assert ModelCard.read(path) == written
    assert isinstance(ModelCard.read(path).gate, GateSkipped)


def test_metrics_json_keeps_the_keys_external_readers_use(tmp_path):
    path = tmp_path / "metrics.json"
    card().write(path)
    raw = json.loads(path.read_text())
    assert raw["model_version"] == 3
    assert raw["selected"] == "random_forest" and raw["selected"] in raw["candidates"]
    assert raw["gate"]["publish"] is False and raw["gate"]["champion_version"] == 2
    assert raw["holdout"]["roc_auc"] == 0.68
    assert raw["created_at"] == "2026-03-04T10:00:00.123456+00:00"
    for values in raw["candidates"].values():
        assert set(CANDIDATE_METRICS) <= set(values) and "config" in values
    assert list(raw) == list(ModelCard.model_fields)

    card(gate=GateSkipped()).write(path)
    assert json.loads(path.read_text())["gate"] == {"publish": False, "reason": "--no-publish"}


def test_a_one_class_month_stays_nan(tmp_path):
    path = tmp_path / "metrics.json"
    card(backtest_per_month=[month("2009-03", float("nan"))]).write(path)
    assert '"roc_auc": NaN' in path.read_text()
    assert math.isnan(ModelCard.read(path).backtest_per_month[0].roc_auc)


def test_an_unknown_metric_is_refused():
    values = candidate(0.7, "x").model_dump() | {"backtest_new_metric": 1.0}
    with pytest.raises(ValueError, match="backtest_new_metric"):
        CandidateMetrics.model_validate(values)
