"""Where a scorer batch's time goes, in process, no broker: each stage of `BatchScorer.score`
on realistic raw records (the bytes producers send: simulator.events.events_from_frame,
JSON-encoded) for batch sizes 1, 50 and 500, the fastest of many repetitions (the others
measure a shared machine's neighbours):

  decode        bytes -> validated ProspectEvents (streamer.scoring.decode_batch)
  frame         events -> the model's input columns (streamer.scoring.feature_columns)
  predict       ModelArtifact.predict, and inside it, for a (calibrated) feature/encode/model
                pipeline: features (BankFeatures.transform), encode (ColumnTransformer),
                model (the estimator's predict_proba), calibrate (the sigmoid); "sklearn glue"
                is predict minus those four (input checks, Pipeline/calibrator dispatch)
  tasks         percentiles, tiers, CallTask objects (score_events minus frame and predict)
  serialise     the rest of BatchScorer.score: dedupe, task + prediction-record JSON, accounting

Run by `python -m bench.tools.profile_scorer micro`.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from callscore.simulator.events import events_from_frame
from registry.artifact import ModelArtifact, load_artifact
from streamer.dedupe import RecentIds
from streamer.scoring import Incoming, ServedModel, decode_batch, feature_frame, score_events
from testkit.factories import small_artifact
from trainer.synthetic import synthetic_bank_frame

SIZES = (1, 50, 500)
REPEATS = {1: 200, 50: 80, 500: 30}


def load_model(path: str | None) -> ModelArtifact:
    if path is None:
        return small_artifact()
    return load_artifact(Path(path).read_bytes())


def served(artifact: ModelArtifact) -> ServedModel:
    from registry.signing import UNSIGNED
    from schemas import ModelManifest

    manifest = ModelManifest(
        **artifact.metadata.description(),
        published_at=datetime.now(UTC),
        artifact_sha256="0" * 64,
        sequence=1,
        key_id="0" * 16,
        signature=UNSIGNED,
        artifact_inline=b"x",
    )
    return ServedModel(artifact, manifest, 0, datetime.now(UTC))


def raw_records(n: int, seed: int = 5) -> list[Incoming]:
    events = events_from_frame(synthetic_bank_frame(rows=n, seed=seed), "profile")
    return [
        Incoming(e["prospect_id"].encode(), json.dumps(e).encode(), "prospects", 0, i, time.time())
        for i, e in enumerate(events)
    ]


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs: on a shared machine the others measure the neighbours."""
    fn()  # warm caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def pipeline_parts(pipeline: Any) -> tuple[Any, Any] | None:
    """(inner feature/encode/model Pipeline, calibrator or None) of the shipped model's shape."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline

    last = pipeline.steps[-1][1] if isinstance(pipeline, Pipeline) else pipeline
    if isinstance(last, CalibratedClassifierCV):
        if len(last.calibrated_classifiers_) != 1:
            return None
        calibrated = last.calibrated_classifiers_[0]
        return calibrated.estimator, calibrated.calibrators[0]
    if isinstance(last, Pipeline):
        return last, None
    return (pipeline, None) if isinstance(pipeline, Pipeline) else None


def predict_breakdown(artifact: ModelArtifact, frame: Any, repeats: int) -> dict[str, float]:
    """Inside predict: the compiled plan's parts if the artifact has one, else the pipeline's."""
    from schemas import FEATURES

    plan = getattr(artifact, "plan", None)
    if plan is not None:
        columns = {name: frame[name].tolist() for name in FEATURES}
        arrays = plan.features.arrays(columns)
        total = best_seconds(lambda: plan.predict(columns), repeats)
        out = {"features": best_seconds(lambda: plan.features.arrays(columns), repeats)}
        matrix = np.zeros((arrays.rows, plan.width))
        out["model"] = best_seconds(lambda: plan.positive(matrix), repeats)
        if plan.calibrator is not None:
            positive = plan.positive(matrix)
            out["calibrate"] = best_seconds(lambda: plan.calibrator.predict(positive), repeats)
        out["encode"] = max(total - sum(out.values()), 0.0)
        return out
    parts = pipeline_parts(artifact.pipeline)
    if parts is None:
        return {}
    inner, calibrator = parts
    steps = dict(inner.steps)
    x = frame[list(FEATURES)]
    out = {}
    if "features" in steps:
        out["features"] = best_seconds(lambda: steps["features"].transform(x), repeats)
        x = steps["features"].transform(x)
    if "encode" in steps:
        out["encode"] = best_seconds(lambda: steps["encode"].transform(x), repeats)
        x = steps["encode"].transform(x)
    model = inner.steps[-1][1]
    out["model"] = best_seconds(lambda: model.predict_proba(x), repeats)
    if calibrator is not None:
        positive = model.predict_proba(x)[:, 1]
        out["calibrate"] = best_seconds(lambda: calibrator.predict(positive), repeats)
    return out


def model_input(events: list[Any]) -> tuple[Callable[[], Any], Callable[[ModelArtifact, Any], Any]]:
    """What score_events builds and calls: plain columns and predict_columns where the scorer
    has them (after commit 0734a15), else a DataFrame and predict."""
    import streamer.scoring as scoring

    if hasattr(scoring, "feature_columns"):
        return (lambda: scoring.feature_columns(events)), (lambda a, c: a.predict_columns(c))
    return (lambda: feature_frame(events)), (lambda a, f: a.predict(f))


def micro_size(size: int, artifact: ModelArtifact, settings: Any) -> dict[str, Any]:
    from streamer.batch import BatchScorer

    model = served(artifact)
    now = datetime.now(UTC)
    repeats = REPEATS.get(size, 30)
    records = raw_records(size)
    valid, _dead = decode_batch(records, settings.max_message_bytes, now)
    events = [event for _m, event in valid]
    frame = feature_frame(events)
    build, predict = model_input(events)
    built = build()
    stage = {
        "decode": best_seconds(
            lambda: decode_batch(records, settings.max_message_bytes, now), repeats
        ),
        "frame": best_seconds(build, repeats),
        "predict": best_seconds(lambda: predict(artifact, built), repeats),
    }
    inside = predict_breakdown(artifact, frame, repeats)
    score_events_s = best_seconds(lambda: score_events(events, model, now), repeats)
    total = best_seconds(
        lambda: BatchScorer(settings, RecentIds(size)).score(records, model, now), repeats
    )
    stage["tasks"] = max(score_events_s - stage["frame"] - stage["predict"], 0.0)
    stage["serialise"] = max(total - stage["decode"] - score_events_s, 0.0)
    return {
        "batch_size": size,
        "repeats": repeats,
        "total_ms": total * 1000,
        "events_per_s": size / total,
        "stages_ms": {k: v * 1000 for k, v in stage.items()},
        "predict_inside_ms": {k: v * 1000 for k, v in inside.items()},
    }


def micro(model_path: str | None, sizes: list[int], label: str) -> dict[str, Any]:
    from core.settings import Settings

    artifact = load_model(model_path)
    settings = Settings(_env_file=None)
    return {
        "label": label,
        "model": model_path or "small_artifact",
        "candidate": artifact.metadata.candidate,
        "python": platform.python_version(),
        "sizes": {str(size): micro_size(size, artifact, settings) for size in sizes},
    }


def print_micro(result: dict[str, Any]) -> None:
    sizes = list(result["sizes"].values())
    header = f"{'stage (ms per batch)':<28}" + "".join(f"{s['batch_size']:>12}" for s in sizes)
    print(f"{result['label']}: {result['model']} ({result['candidate']})")
    print(header)

    def row(name: str, values: list[float | None]) -> None:
        cells = "".join(f"{v:>12.3f}" if v is not None else f"{'-':>12}" for v in values)
        print(f"{name:<28}{cells}")

    for name in ("decode", "frame", "predict", "tasks", "serialise"):
        row(name, [s["stages_ms"][name] for s in sizes])
        if name == "predict":
            inner = sizes[0]["predict_inside_ms"]
            for part in inner:
                row(f"  {part}", [s["predict_inside_ms"].get(part) for s in sizes])
            row(
                "  sklearn glue",
                [s["stages_ms"]["predict"] - sum(s["predict_inside_ms"].values()) for s in sizes],
            )
    row("BatchScorer.score total", [s["total_ms"] for s in sizes])
    print(f"{'events/s (one core)':<28}" + "".join(f"{s['events_per_s']:>12.0f}" for s in sizes))
