"""The model card of one trained version, typed: written as metrics.json and read back the same.

Readers outside this code (the CLI, dashboards, people comparing runs) parse metrics.json by
key, so the field names, their nesting and their order are the file's format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Self

import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, PlainSerializer

from schemas import TierCutPoints
from trainer.gate import GateDecision, GateSkipped

CARD_FILE = "metrics.json"
ARTIFACT_FILE = "model.joblib"
REPORT_FILE = "report.html"

# isoformat keeps the "+00:00" offset that metrics.json always had (pydantic would write "Z").
Timestamp = Annotated[
    AwareDatetime, PlainSerializer(datetime.isoformat, return_type=str, when_used="json")
]


class CardPart(BaseModel):
    # extra="forbid": the parts are built from the evaluation's metric dicts, so a metric added
    # or renamed there fails here instead of silently missing from the card.
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    @classmethod
    def from_table(cls, table: pd.DataFrame) -> list[Self]:
        return [cls.model_validate(row) for row in table.to_dict(orient="records")]


def to_table(rows: Sequence[CardPart]) -> pd.DataFrame:
    return pd.DataFrame([row.model_dump() for row in rows])


class DataSummary(CardPart):
    rows: int
    sha256: str
    is_uci_bank_full: bool
    first_period: str
    last_period: str
    positive_rate: float


class DataSources(CardPart):
    """Where the training rows came from: the base file, then labelled outcomes."""

    base_rows: int
    base_data_until: str | None  # base periods before this month only
    base_periods: list[str]
    outcomes_read: bool  # False: --no-outcomes
    outcome_rows: int  # labelled predictions appended (one per event, its latest call)
    outcome_periods: list[str]
    labelled_until: Timestamp | None  # newest call used (event time)
    predictions: int  # valid prediction-log records read (one per event)
    invalid_predictions: int
    outcomes: int  # valid outcomes read
    invalid_outcomes: int
    unmatched_outcomes: int  # valid outcomes whose prediction was not on the log
    overlapping_periods: list[str]  # periods in both parts: see Settings.base_data_until
    invalid_examples: list[str]  # the first messages of invalid records
    window_months: int | None = None  # Settings.training_window_months (None: every period)
    rows_before_window: int = 0  # older rows the window left out


class CandidateMetrics(CardPart):
    """Protocol A (random CV), then protocol B (rolling monthly backtest) of one finalist."""

    random_cv_roc_auc: float
    backtest_monthly_roc_auc: float
    backtest_roc_auc: float
    backtest_pr_auc: float
    backtest_lift_top_decile: float
    brier: float
    backtest_mean_score: float
    backtest_positive_rate: float
    backtest_rows: float
    config: str


class ScreenRow(CardPart):
    candidate: str
    pdays: str
    day_month: bool
    period: str
    params: str
    screen_monthly_roc_auc: float
    screen_pooled_roc_auc: float
    seconds: float


class SearchSummary(CardPart):
    time_budget_seconds: float
    fast: bool
    skipped_configs: int
    reference: bool = False  # the reference configuration only, no search
    screen: list[ScreenRow]


class BacktestMonth(CardPart):
    period: str
    rows: int
    positives: int
    roc_auc: float  # NaN when the month has one class only
    mean_score: float
    positive_rate: float
    trained_rows: int
    retrained: bool


class HoldoutSummary(CardPart):
    """The model fitted before the latest periods, scored on them as serving would."""

    roc_auc: float
    pr_auc: float
    lift_top_decile: float
    brier: float
    mean_score: float
    positive_rate: float
    periods: list[str]
    rows: int
    trained_rows: int


class ImportanceRow(CardPart):
    feature: str
    mean: float
    std: float


class ModelCard(CardPart):
    model_name: str
    model_version: int
    created_at: Timestamp
    # Cards written before the feedback loop have neither field.
    reason: str | None = None  # why this version exists (the manifest's reason)
    selected: str
    selected_config: str
    selection_metric: str
    features: list[str]
    data: DataSummary
    sources: DataSources | None = None
    candidates: dict[str, CandidateMetrics]
    # '<candidate>: <variant>' -> {variant value: screen AUC}; see selection.feature_comparisons
    feature_comparisons: dict[str, dict[str, float]]
    search: SearchSummary
    backtest_per_month: list[BacktestMonth]
    holdout: HoldoutSummary
    tier_cut_points: TierCutPoints
    gate: GateDecision | GateSkipped
    published: bool
    permutation_importance: list[ImportanceRow]
    timings_seconds: dict[str, float]

    def write(self, path: Path) -> None:
        # json.dumps rather than model_dump_json: it writes NaN (a one-class backtest month) as
        # NaN, as metrics.json always had, where pydantic would write null.
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        return cls.model_validate(json.loads(path.read_text()))

    def headline(self) -> dict[str, Any]:
        """What a reader wants first: which version, which model, and whether it shipped."""
        return self.model_dump(mode="json", include={"model_version", "selected", "gate"})
