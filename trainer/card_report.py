"""The model card of one version: PNG charts and a self-contained report.html next to them."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from trainer.evaluation import SELECTION_METRIC
from trainer.model_card import REPORT_FILE, ModelCard, to_table


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def plot_roc_pr(y: np.ndarray, scores: np.ndarray, out: Path) -> list[str]:
    fpr, tpr, _ = roc_curve(y, scores)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (holdout)")
    names = [_save(fig, out / "roc.png")]
    precision, recall, _ = precision_recall_curve(y, scores)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(recall, precision)
    ax.axhline(float(np.mean(y)), ls="--", color="grey", label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (holdout)")
    ax.legend()
    names.append(_save(fig, out / "pr.png"))
    return names


def plot_gain(y: np.ndarray, scores: np.ndarray, out: Path) -> str:
    order = np.argsort(-scores, kind="stable")
    called = np.arange(1, len(y) + 1) / len(y)
    gain = np.cumsum(y[order]) / max(1, y.sum())
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    left.plot(called, gain, label="model")
    left.plot([0, 1], [0, 1], "--", color="grey", label="random")
    left.set(xlabel="fraction called (by score)", ylabel="fraction of subscribers reached")
    left.set_title("Cumulative gain (holdout)")
    left.legend()
    right.plot(called, gain / called)
    right.axhline(1.0, ls="--", color="grey")
    right.set(xlabel="fraction called (by score)", ylabel="lift", title="Lift (holdout)")
    return _save(fig, out / "gain_lift.png")


def plot_calibration(y: np.ndarray, scores: np.ndarray, out: Path) -> str:
    true, predicted = calibration_curve(y, scores, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(predicted, true, "o-", label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.set(xlabel="mean predicted P(subscribe)", ylabel="observed rate")
    ax.set_title("Reliability (holdout)")
    ax.legend()
    return _save(fig, out / "calibration.png")


def plot_backtest(per_period: pd.DataFrame, out: Path, name: str = "backtest.png") -> str:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    x = np.arange(len(per_period))
    top.bar(x, per_period["roc_auc"].fillna(0), color="tab:blue")
    top.axhline(0.5, ls="--", color="grey")
    top.set(ylabel="ROC-AUC", title="Rolling monthly backtest (selected model)", ylim=(0.3, 1))
    bottom.plot(x, per_period["positive_rate"], "o-", label="observed rate")
    bottom.plot(x, per_period["mean_score"], "s-", label="mean predicted")
    bottom.set(ylabel="P(subscribe)")
    bottom.legend()
    bottom.set_xticks(x, per_period["period"], rotation=90)
    return _save(fig, out / name)


def plot_importance(importance: pd.DataFrame, out: Path) -> str:
    table = importance.sort_values("mean")
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.barh(table["feature"], table["mean"], xerr=table["std"])
    ax.set(xlabel="drop in ROC-AUC when shuffled", title="Permutation importance (holdout)")
    return _save(fig, out / "importance.png")


def plot_cadence(table: pd.DataFrame, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(table["retrain_every"].astype(str), table[SELECTION_METRIC])
    ax.set(
        xlabel="retrain every N months",
        ylabel="per-month weighted ROC-AUC",
        title="Retraining cadence",
        ylim=(0.4, max(0.8, float(table[SELECTION_METRIC].max()) + 0.05)),
    )
    return _save(fig, out / "cadence.png")


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0)


def _tables(card: ModelCard) -> dict[str, pd.DataFrame]:
    candidates = [
        {"candidate": name, **metrics.model_dump(exclude={"config"})}
        for name, metrics in card.candidates.items()
    ]
    holdout = card.holdout.model_dump() | {"periods": ", ".join(card.holdout.periods)}
    return {
        "Candidates (A: random CV; B: rolling monthly backtest)": pd.DataFrame(candidates),
        "Feature variants (screening origins)": pd.DataFrame(
            [{"comparison": name, **values} for name, values in card.feature_comparisons.items()]
        ),
        "Search screen": to_table(card.search.screen),
        "Backtest per month (selected)": to_table(card.backtest_per_month),
        "Holdout": pd.DataFrame([holdout]),
    }


def write_report(out: Path, card: ModelCard) -> Path:
    """report.html: headline, decision, tables, then every PNG in the folder."""
    images = sorted(p.name for p in out.glob("*.png"))
    sections = "".join(
        f"<h2>{html.escape(title)}</h2>{_table(frame)}" for title, frame in _tables(card).items()
    )
    figures = "".join(f'<figure><img src="{html.escape(n)}" alt="{n}"></figure>' for n in images)
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Model card v{card.model_version}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}
table{{border-collapse:collapse}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}
figure{{display:inline-block;margin:4px}}</style></head><body>
<h1>Model card: {html.escape(card.model_name)} v{card.model_version}</h1>
<p>Scores are calibrated P(subscribe). Selection metric: row-weighted mean of per-month ROC-AUC in
a rolling-origin backtest. Random CV is shown for comparison only: it overstates this drifting
task. Synthetic data never yields reportable quality.</p>
<pre>{html.escape(json.dumps(card.headline(), indent=2))}</pre>
{sections}
<h2>Charts</h2>{figures}
</body></html>"""
    path = out / REPORT_FILE
    path.write_text(page)
    return path
