"""`callscore report`: the rendering on synthetic labelled rows, then one run against a broker."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from callscore.processes import CALLSCORE
from callscore.simulator.events import events_from_frame
from core.kafka import ensure_topics
from feedback.join import Labelled
from feedback.quality import latest_per_event, period_of, quality_by_period, quality_by_version
from feedback.quality_report import (
    QUALITY_FILE,
    REPORT_FILE,
    ReportInputs,
    reliability,
    write_report,
)
from schemas import FEATURES, CallOutcome, PredictionRecord, task_id_for
from testkit.factories import small_artifact
from testkit.harness import produce, publish_model
from trainer.synthetic import synthetic_bank_frame

T0 = datetime(2009, 1, 10, tzinfo=UTC)
CHARTS = ("auc_by_month.png", "tier_conversion.png", "reliability.png", "drift.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def history(rows: int, seed: int) -> tuple[list[PredictionRecord], list[Labelled]]:
    """Two versions over four event months; v2 scores better; a few events called twice."""
    rng = np.random.default_rng(seed)
    events = events_from_frame(synthetic_bank_frame(rows=rows, seed=seed), prefix="r")
    predictions, labelled = [], []
    for i, event in enumerate(events):
        version = 1 if i < rows // 2 else 2
        truth = rng.random() < 0.3
        noise = 0.35 if version == 1 else 0.2
        score = float(np.clip(0.3 + (0.3 if truth else -0.1) + rng.normal(0, noise), 0.01, 0.99))
        p = PredictionRecord(
            event_id=event["event_id"],
            task_id=task_id_for(event["event_id"]),
            prospect_id=event["prospect_id"],
            occurred_at=T0 + timedelta(days=120 * i / rows),
            features={name: event[name] for name in FEATURES},
            score=score,
            priority="high" if score >= 0.6 else "medium" if score >= 0.4 else "low",
            percentile=score * 100,
            model_version=version,
            scored_at=T0,
        )
        predictions.append(p)
        if i % 5 == 4:
            continue  # never called
        calls = [bool(truth)] + ([not truth] if i % 17 == 0 else [])
        for n, subscribed in enumerate(calls):
            o = CallOutcome(
                event_id=p.event_id,
                prospect_id=p.prospect_id,
                called_at=p.occurred_at + timedelta(days=1 + n),
                subscribed=subscribed,
                duration_seconds=60,
            )
            labelled.append(Labelled(p, o))
    return predictions, labelled


def test_report_files_and_numbers_equal_feedback_quality(tmp_path):
    predictions, labelled = history(600, seed=4)
    artifact = small_artifact(1, seed=1)
    assert artifact.metadata.drift_baseline is not None
    baselines = {1: artifact.metadata.drift_baseline, 2: artifact.metadata.drift_baseline}
    inputs = ReportInputs(labelled, predictions, baselines, {"predictions": len(predictions)})

    page = write_report(tmp_path, inputs, min_rows_for_psi=50, psi_threshold=0.25)

    assert page == tmp_path / REPORT_FILE
    text = page.read_text()
    for chart in CHARTS:
        assert (tmp_path / chart).read_bytes()[:8] == PNG_MAGIC
        assert (tmp_path / chart).stat().st_size > 10_000  # drawn, not an empty canvas
        assert f'src="{chart}"' in text
    numbers = json.loads((tmp_path / QUALITY_FILE).read_text())
    by_version = quality_by_version(labelled, predictions, baselines, min_rows_for_psi=50)
    assert numbers["by_version"] == {
        str(v): q.model_dump(mode="json") for v, q in by_version.items()
    }
    assert numbers["by_period"] == [
        q.model_dump(mode="json") for q in quality_by_period(labelled, predictions, baselines)
    ]
    keys = [(q["period"], q["model_version"]) for q in numbers["by_period"]]
    assert keys == sorted({(period_of(p), p.model_version) for p in predictions})
    assert {period for period, _ in keys} == {"2009-01", "2009-02", "2009-03", "2009-04", "2009-05"}
    assert by_version[2].roc_auc > by_version[1].roc_auc  # the synthetic v2 is the better one
    assert numbers["by_version"]["1"]["score_psi"] is not None
    assert numbers["totals"] == {"predictions": 600}
    assert f"v1</td><td>{by_version[1].outcomes}</td>" in text

    # reliability: equal-count score bins over one label per event (the latest call)
    v1 = latest_per_event([item for item in labelled if item.prediction.model_version == 1])
    bins = numbers["reliability"]["1"]
    assert len(bins) == 10 and sum(b["rows"] for b in bins) == len(v1)
    lowest = sorted(v1, key=lambda item: item.prediction.score)[: bins[0]["rows"]]
    assert bins[0]["mean_score"] == pytest.approx(np.mean([r.prediction.score for r in lowest]))
    assert bins[0]["observed_rate"] == pytest.approx(np.mean([r.subscribed for r in lowest]))
    assert [b["mean_score"] for b in bins] == sorted(b["mean_score"] for b in bins)


def test_report_without_outcomes_still_renders(tmp_path):
    predictions, _ = history(20, seed=5)
    write_report(tmp_path, ReportInputs([], predictions, {}, {}), 10, 0.25)
    numbers = json.loads((tmp_path / QUALITY_FILE).read_text())
    assert numbers["reliability"] == {} and numbers["by_version"]["1"]["outcomes"] == 0
    assert all((tmp_path / chart).exists() for chart in CHARTS)
    assert reliability([]) == []


def test_report_command_reads_the_topics(kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"quality_min_outcomes": 10})
    ensure_topics(settings)
    publish_model(settings, version=1)
    predictions, labelled = history(120, seed=6)
    outcomes = [item.outcome.model_dump_json().encode() for item in labelled]
    ghost = CallOutcome(
        event_id="ghost", prospect_id="c", called_at=T0, subscribed=True, duration_seconds=1
    )
    produce(
        settings,
        [(p.event_id.encode(), p.model_dump_json().encode()) for p in predictions],
        topic=settings.topic_predictions,
    )
    produce(
        settings,
        [(b"k", v) for v in [*outcomes, ghost.model_dump_json().encode(), b"{broken"]],
        topic=settings.topic_outcomes,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCORE_")}
    out = tmp_path / "report"

    done = subprocess.run(
        [CALLSCORE, "report", "--out", str(out)],
        env=env | settings.as_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert str(out / REPORT_FILE) in done.stdout
    numbers = json.loads((out / QUALITY_FILE).read_text())
    totals = numbers["totals"]
    assert (totals["predictions"], totals["outcomes"]) == (120, len(outcomes) + 1)
    assert (totals["unmatched"], totals["invalid_outcomes"]) == (1, 1)
    expected = quality_by_version(labelled, predictions)
    for version, q in expected.items():
        online = numbers["by_version"][str(version)]
        assert online["outcomes"] == q.outcomes
        assert online["roc_auc"] == pytest.approx(q.roc_auc, abs=1e-12)
    assert numbers["by_version"]["1"]["score_psi"] is not None  # v1's signed baseline
    assert numbers["by_version"]["2"]["score_psi"] is None  # no manifest for v2
    assert all((out / chart).exists() for chart in CHARTS)
