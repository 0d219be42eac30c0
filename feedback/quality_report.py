"""`callscore report`: the online quality of every model version over time.

Writes `quality.json` (the numbers, straight from `feedback.quality`), PNG charts and a
self-contained `report.html` that shows them, into one folder. Periods are the predictions'
event-time months (`PredictionRecord.occurred_at`), so a replay of old data reads as its own time.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from pydantic import BaseModel

from feedback.join import Labelled
from feedback.quality import Quality, latest_per_event, quality_by_period, quality_by_version
from schemas import PRIORITIES, DriftBaseline, PredictionRecord

REPORT_FILE = "report.html"
QUALITY_FILE = "quality.json"
RELIABILITY_BINS = 10  # score deciles
TOP_FEATURES = 5


class ReliabilityBin(BaseModel):
    rows: int
    mean_score: float
    observed_rate: float


def reliability(labelled: Sequence[Labelled], bins: int = RELIABILITY_BINS) -> list[ReliabilityBin]:
    """Mean predicted vs observed rate in equal-count score bins (one label per event)."""
    rows = latest_per_event(labelled)
    if not rows:
        return []
    scores = np.array([r.prediction.score for r in rows], dtype=float)
    labels = np.array([r.subscribed for r in rows], dtype=float)
    order = np.argsort(scores, kind="stable")
    groups = np.array_split(order, min(bins, len(rows)))
    return [
        ReliabilityBin(
            rows=len(g), mean_score=float(scores[g].mean()), observed_rate=float(labels[g].mean())
        )
        for g in groups
    ]


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report is computed from (e.g. a `feedback.labels.LabelSet` and baselines)."""

    labelled: Sequence[Labelled]
    predictions: Sequence[PredictionRecord]
    baselines: dict[int, DriftBaseline]
    totals: dict[str, Any]  # counts of what was read, shown as they are


def summary(
    inputs: ReportInputs, by_version: dict[int, Quality], by_period: Sequence[Quality]
) -> dict[str, Any]:
    """What quality.json holds: totals, quality per version and per (month, version), deciles."""
    per_version: dict[int, list[Labelled]] = defaultdict(list)
    for item in inputs.labelled:
        per_version[item.prediction.model_version].append(item)
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "totals": inputs.totals,
        "by_version": {str(v): q.model_dump(mode="json") for v, q in by_version.items()},
        "by_period": [q.model_dump(mode="json") for q in by_period],
        "reliability": {
            str(v): [b.model_dump() for b in reliability(rows)]
            for v, rows in sorted(per_version.items())
        },
    }


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _periods(rows: Sequence[Quality]) -> list[str]:
    return sorted({r.period for r in rows if r.period})


def _series(rows: Sequence[Quality], periods: list[str], value: Any) -> dict[int, list[float]]:
    """One line per version over every period (NaN where the version has no value)."""
    at = {p: i for i, p in enumerate(periods)}
    lines: dict[int, list[float]] = {}
    for row in rows:
        if row.model_version is None or row.period is None:
            continue
        line = lines.setdefault(row.model_version, [np.nan] * len(periods))
        number = value(row)
        line[at[row.period]] = np.nan if number is None else number
    return dict(sorted(lines.items()))


def _month_axis(ax: Any, periods: list[str]) -> None:
    ax.set_xticks(range(len(periods)), periods, rotation=90)
    if not periods:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)


def plot_auc_by_month(by_period: Sequence[Quality], out: Path) -> str:
    periods = _periods(by_period)
    fig, ax = plt.subplots(figsize=(9, 4))
    for version, line in _series(by_period, periods, lambda q: q.roc_auc).items():
        ax.plot(range(len(periods)), line, "o-", label=f"v{version}")
    ax.axhline(0.5, ls="--", color="grey", label="random")
    ax.set(ylabel="online ROC-AUC", ylim=(0.3, 1.0), title="Online ROC-AUC by event month")
    _month_axis(ax, periods)
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, out / "auc_by_month.png")


def plot_tier_conversion(by_period: Sequence[Quality], out: Path) -> str:
    """Conversion per tier per month, pooled over versions (calls and subscriptions add up)."""
    periods = _periods(by_period)
    at = {p: i for i, p in enumerate(periods)}
    calls = {t: np.zeros(len(periods)) for t in PRIORITIES}
    subscribed = {t: np.zeros(len(periods)) for t in PRIORITIES}
    for row in by_period:
        for tier, conversion in row.conversion_by_tier.items():
            calls[tier][at[row.period or ""]] += conversion.calls
            subscribed[tier][at[row.period or ""]] += conversion.subscribed
    fig, ax = plt.subplots(figsize=(9, 4))
    for tier in PRIORITIES:
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(calls[tier] > 0, subscribed[tier] / calls[tier], np.nan)
        ax.plot(range(len(periods)), rate, "o-", label=tier)
    ax.set(ylabel="subscribed / called", title="Conversion rate by tier and event month")
    ax.set_ylim(0, 1)
    _month_axis(ax, periods)
    ax.legend(title="tier", fontsize="small")
    return _save(fig, out / "tier_conversion.png")


def plot_reliability(bins: dict[str, list[dict[str, Any]]], out: Path) -> str:
    fig, ax = plt.subplots(figsize=(5, 5))
    for version, rows in bins.items():
        ax.plot(
            [b["mean_score"] for b in rows],
            [b["observed_rate"] for b in rows],
            "o-",
            label=f"v{version}",
        )
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.set(
        xlabel="mean predicted P(subscribe), score decile",
        ylabel="observed rate",
        xlim=(0, 1),
        ylim=(0, 1),
        title="Reliability by version (online)",
    )
    ax.legend(fontsize="small")
    return _save(fig, out / "reliability.png")


def _busiest(by_period: Sequence[Quality]) -> list[Quality]:
    """Per month, the row of the version with the most predictions (the one mostly served)."""
    best: dict[str, Quality] = {}
    for row in by_period:
        kept = best.get(row.period or "")
        if kept is None or row.predictions > kept.predictions:
            best[row.period or ""] = row
    return [best[p] for p in sorted(best)]


def plot_drift(by_period: Sequence[Quality], out: Path, psi_threshold: float) -> str:
    periods = _periods(by_period)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for version, line in _series(by_period, periods, lambda q: q.score_psi).items():
        top.plot(range(len(periods)), line, "o-", label=f"v{version}")
    top.axhline(psi_threshold, ls="--", color="tab:red", label="retrain threshold")
    top.set(ylabel="score PSI", title="Score PSI against each version's training distribution")
    top.set_ylim(bottom=0)
    top.legend(fontsize="small")
    busiest = _busiest(by_period)
    worst: dict[str, float] = defaultdict(float)
    for row in busiest:
        for name, value in row.feature_psi.items():
            worst[name] = max(worst[name], value)
    at = {p: i for i, p in enumerate(periods)}
    for name in sorted(worst, key=lambda n: -worst[n])[:TOP_FEATURES]:
        line = [np.nan] * len(periods)
        for row in busiest:
            if name in row.feature_psi:
                line[at[row.period or ""]] = row.feature_psi[name]
        bottom.plot(range(len(periods)), line, "o-", label=name)
    bottom.axhline(psi_threshold, ls="--", color="tab:red")
    bottom.set_ylim(bottom=0)
    bottom.set(
        ylabel="feature PSI",
        title=f"Top {TOP_FEATURES} features by PSI (version with the most predictions per month)",
    )
    _month_axis(bottom, periods)
    if worst:
        bottom.legend(fontsize="small")
    return _save(fig, out / "drift.png")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _version_table(by_version: dict[str, dict[str, Any]]) -> str:
    head = [
        "version",
        "outcomes",
        "subscribed",
        "ROC-AUC",
        "Brier",
        "mean score",
        "observed rate",
        *(f"{t} conversion" for t in PRIORITIES),
        "predictions",
        "score PSI",
    ]
    rows = []
    for version, q in by_version.items():
        tiers = [q["conversion_by_tier"][t]["rate"] for t in PRIORITIES]
        cells = [
            f"v{version}",
            q["outcomes"],
            q["positives"],
            q["roc_auc"],
            q["brier"],
            q["mean_score"],
            q["observed_rate"],
            *tiers,
            q["predictions"],
            q["score_psi"],
        ]
        rows.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def write_report(
    out: Path, inputs: ReportInputs, min_rows_for_psi: int, psi_threshold: float
) -> Path:
    """quality.json, the charts and report.html in `out` (created); returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    labelled, predictions, baselines = inputs.labelled, inputs.predictions, inputs.baselines
    by_version = quality_by_version(labelled, predictions, baselines, min_rows_for_psi)
    by_period = quality_by_period(labelled, predictions, baselines)
    numbers = summary(inputs, by_version, by_period)
    (out / QUALITY_FILE).write_text(json.dumps(numbers, indent=2, allow_nan=False))
    charts = [
        plot_auc_by_month(by_period, out),
        plot_tier_conversion(by_period, out),
        plot_reliability(numbers["reliability"], out),
        plot_drift(by_period, out, psi_threshold),
    ]
    figures = "".join(
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(name)}"></figure>'
        for name in charts
    )
    totals = html.escape(json.dumps(numbers["totals"], indent=2))
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Online model quality</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}
table{{border-collapse:collapse}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}
figure{{display:inline-block;margin:4px}}</style></head><body>
<h1>Online model quality</h1>
<p>Predictions from the prediction log joined to call outcomes (the latest call per event
counts). Months are the events' own time. PSI compares recent scores and features with each
version's training distribution (from its signed manifest); above {psi_threshold:g} is a large
shift. The numbers are in <a href="{QUALITY_FILE}">{QUALITY_FILE}</a>.</p>
<pre>{totals}</pre>
<h2>Per model version</h2>{_version_table(numbers["by_version"])}
<h2>Charts</h2>{figures}
</body></html>"""
    path = out / REPORT_FILE
    path.write_text(page)
    return path
