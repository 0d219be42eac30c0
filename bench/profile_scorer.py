"""Where a scorer batch's time goes, in process without a broker; and the stream, with any model.

`micro` (default) times each stage of `BatchScorer.score` on realistic raw records (the bytes
producers send: simulator.events.events_from_frame, JSON-encoded) for batch sizes 1, 50 and
500, the fastest of many repetitions (the others measure a shared machine's neighbours):

  decode        bytes -> validated ProspectEvents (streamer.scoring.decode_batch)
  frame         events -> the model's input DataFrame (streamer.scoring.feature_frame)
  predict       ModelArtifact.predict, and inside it, for a (calibrated) feature/encode/model
                pipeline: features (BankFeatures.transform), encode (ColumnTransformer),
                model (the estimator's predict_proba), calibrate (the sigmoid); "sklearn glue"
                is predict minus those four (input checks, Pipeline/calibrator dispatch)
  tasks         percentiles, tiers, CallTask objects (score_events minus frame and predict)
  serialise     the rest of BatchScorer.score: dedupe, task + prediction-record JSON, accounting

    .venv/bin/python -m bench.profile_scorer micro --model /tmp/prodmodel/model.joblib \
        [--label before] [--sizes 1 50 500]

`stream` runs `callscore stream` against a fresh Tansu with that model, as bench/stream_bench.py
does with the small one: latency at a steady rate, then the throughput of a backlog, optionally
with py-spy recording the worker during the backlog (`--py-spy /tmp/profile.txt`, raw format,
summarised by `py-spy-summary`):

    .venv/bin/python -m bench.profile_scorer stream --model /tmp/prodmodel/model.joblib \
        [--backlog 20000] [--rate 500] [--seconds 10] [--py-spy FILE] [--set FIELD=VALUE ...]

    .venv/bin/python -m bench.profile_scorer py-spy-summary FILE

Results go to bench/results/profile_scorer_<label>.json / profile_stream_<label>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.latency import latencies_by_id, produce_paced
from bench.payloads import Events
from bench.results_file import write_results
from callscore.simulator.events import events_from_frame
from core.topic_reader import read_topics
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


# --- the stream -----------------------------------------------------------------------------
def _events(prefix: str, n: int) -> list[dict[str, Any]]:
    return events_from_frame(synthetic_bank_frame(rows=n, seed=11), prefix)


def stream(
    model_path: str | None,
    backlog: int,
    rate: float,
    seconds: float,
    py_spy: str | None,
    overrides: dict[str, str],
    label: str,
) -> dict[str, Any]:
    from core.kafka import ensure_topics
    from core.local_broker import start_tansu
    from registry.artifact import dump_artifact
    from registry.model_topic import publish_manifest
    from registry.signing import build_manifest
    from testkit.harness import (
        StreamWorker,
        collect,
        event_bytes,
        isolated_settings,
        produce,
        worker_settings,
    )

    artifact = load_model(model_path)
    data = Path(model_path).read_bytes() if model_path else dump_artifact(artifact)
    broker = start_tansu()
    workdir = Path(tempfile.mkdtemp(prefix="profile-stream-"))
    spy: subprocess.Popen[bytes] | None = None
    try:
        base = isolated_settings(
            "profile",
            workdir,
            bootstrap_servers=broker.bootstrap_servers,
            partitions=int(overrides.pop("partitions", 4)),
            **overrides,
        )
        settings = worker_settings(base, workdir)
        ensure_topics(settings)
        publish_manifest(settings, build_manifest(data, artifact.metadata, settings))
        worker = StreamWorker(settings, workdir / "worker.log")
        tiers = list(settings.task_topics.values())
        try:
            worker.wait_ready(120)
            warm = int(rate * 2)
            steady = _events("steady", warm + int(rate * seconds))
            warm_ids = {e["event_id"] for e in steady[:warm]}
            produce_paced(settings, Events(steady), rate)
            tasks = collect(settings, tiers, lambda r: len(r) >= len(steady), timeout=120)
            latencies = np.array(
                [v for k, v in latencies_by_id(settings, tasks).items() if k not in warm_ids]
            )
            burst = _events("burst", backlog)
            before = len(tasks)
            if py_spy:
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("py-spy")),
                        "record",
                        "--pid",
                        str(worker.process.pid),
                        "--format",
                        "raw",
                        "--rate",
                        "200",
                        "--gil",  # only what holds the GIL: the CPU the worker spends
                        "--nonblocking",
                        "-o",
                        py_spy,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)
            produce(settings, map(event_bytes, burst))
            everything = collect(settings, tiers, lambda r: len(r) >= before + backlog, 300)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(60)
            stamps = {
                r.json()["event_id"]: r.timestamp_ms
                for r in read_topics(settings, [settings.topic_prospects], timeout=60)
            }
            burst_ids = {e["event_id"] for e in burst}
            burst_tasks = [t for t in everything if t.json()["event_id"] in burst_ids]
            first_in = min(stamps[i] for i in burst_ids)
            last_out = max(t.timestamp_ms for t in burst_tasks)
            throughput = len(burst_tasks) / ((last_out - first_in) / 1000.0)
            batches = worker.metric("callscore_batch_size_count")
            batch_events = worker.metric("callscore_batch_size_sum")
        finally:
            worker.stop()
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        broker.stop()
    return {
        "label": label,
        "model": model_path or "small_artifact",
        "candidate": artifact.metadata.candidate,
        "settings": {
            "batch_max_size": settings.batch_max_size,
            "batch_max_wait_seconds": settings.batch_max_wait_seconds,
            "fetch_max_wait_ms": settings.fetch_max_wait_ms,
            "producer_linger_ms": settings.producer_linger_ms,
            "partitions": settings.partitions,
        },
        "steady": {
            "rate_events_per_s": rate,
            "events": len(steady) - warm,
            "latency_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
            "latency_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
            "latency_max_ms": round(float(latencies.max()) * 1000, 1),
        },
        "backlog": {
            "events": backlog,
            "tasks": len(burst_tasks),
            "throughput_events_per_s": round(throughput),
        },
        "mean_batch_size": round(batch_events / batches, 1) if batches else None,
        "py_spy": py_spy,
    }


# --- a batch-native loop: the same scoring without Faust ------------------------------------
def native(model_path: str | None, backlog: int, overrides: dict[str, str], label: str) -> dict:
    """BatchScorer.score between a confluent-kafka `consume(num_messages)` and a producer whose
    outputs are flushed (acks=all) before the batch's offsets are committed: the scorer's work
    and guarantees in a loop with no framework. Drains a backlog produced before it starts."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    from core.kafka import consumer_config, ensure_topics, producer_config
    from core.local_broker import start_tansu
    from streamer.batch import BatchScorer
    from testkit.harness import event_bytes, isolated_settings, produce

    model = served(load_model(model_path))
    broker = start_tansu()
    workdir = Path(tempfile.mkdtemp(prefix="profile-native-"))
    try:
        settings = isolated_settings(
            "native",
            workdir,
            bootstrap_servers=broker.bootstrap_servers,
            partitions=int(overrides.pop("partitions", 4)),
            **overrides,
        )
        ensure_topics(settings)
        produce(settings, map(event_bytes, _events("burst", backlog)))
        consumer = Consumer(consumer_config(settings, "native-scorer"))
        consumer.assign(
            [
                TopicPartition(settings.topic_prospects, p, OFFSET_BEGINNING)
                for p in range(settings.partitions)
            ]
        )
        producer = Producer(producer_config(settings))
        scorer = BatchScorer(settings, RecentIds(settings.dedupe_window))
        consumed = batches = 0
        started = time.perf_counter()
        while consumed < backlog:
            messages = consumer.consume(
                settings.batch_max_size, timeout=settings.batch_max_wait_seconds
            )
            records = [
                Incoming(m.key(), m.value(), str(m.topic()), m.partition() or 0, m.offset() or 0)
                for m in messages
                if m.error() is None
            ]
            if not records:
                continue
            result = scorer.score(records, model, datetime.now(UTC))
            for out in result.outgoing:
                headers: list[tuple[str, str | bytes | None]] = list(out.headers)
                producer.produce(out.topic, out.value, out.key, headers=headers)
            if producer.flush(30) != 0:
                raise RuntimeError("outputs not acknowledged")
            consumer.commit(asynchronous=True)
            consumed += result.consumed
            batches += 1
        elapsed = time.perf_counter() - started
        consumer.close()
    finally:
        broker.stop()
    return {
        "label": label,
        "model": model_path or "small_artifact",
        "loop": "confluent-kafka consume(batch_max_size) -> BatchScorer.score -> produce, flush",
        "backlog": {"events": backlog, "throughput_events_per_s": round(backlog / elapsed)},
        "mean_batch_size": round(consumed / batches, 1),
    }


# --- py-spy raw output, grouped -----------------------------------------------------------
OUR_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the innermost (nearest the leaf) of our stages a sample is in
    ("serialisation", ("_task_record", "_prediction_record", "dead_letter_record", "._outgoing")),
    ("validation", ("decode_batch", "decode_prospect", "decode_json")),
    ("feature building", ("feature_frame", "feature_columns", "trainer/features.py")),
    ("predict_proba", ("predict (registry/", "registry/serving")),
    ("tasks (ranks, tiers, CallTask)", ("score_events",)),
    ("producing (send_all)", ("send_all",)),
)
# Otherwise, the library whose frame is nearest the leaf.
LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aiokafka producer", ("aiokafka/producer",)),
    ("aiokafka consumer/fetcher", ("aiokafka/consumer", "aiokafka/record", "aiokafka/protocol")),
    ("aiokafka client/conn", ("aiokafka/",)),
    ("Faust/mode", ("faust/", "mode/")),
    ("HTTP/metrics", ("aiohttp/", "prometheus")),
    ("event loop (asyncio/uvloop)", ("asyncio/", "uvloop", "selectors.py")),
)


def classify(stack: str) -> str:
    frames = stack.split(";")
    for groups in (OUR_STAGES, LIBRARIES):
        for frame in reversed(frames):
            for group, needles in groups:
                if any(n in frame for n in needles):
                    return group
    return "other"


def summarise_py_spy(path: str, top: int = 25) -> dict[str, Any]:
    groups: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        groups[classify(stack)] += count
        leaves[stack.split(";")[-1]] += count
    return {
        "samples": total,
        "groups_percent": {g: round(100 * c / total, 1) for g, c in groups.most_common()},
        "top_leaf_frames_percent": {
            f: round(100 * c / total, 1) for f, c in leaves.most_common(top)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    m = sub.add_parser("micro")
    s = sub.add_parser("stream")
    for p in (m, s):
        p.add_argument("--model", help="model.joblib (default: the small test model)")
        p.add_argument("--label", default="current")
    m.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    s.add_argument("--backlog", type=int, default=20_000)
    s.add_argument("--rate", type=float, default=500.0)
    s.add_argument("--seconds", type=float, default=10.0)
    s.add_argument("--py-spy", dest="py_spy")
    s.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    n = sub.add_parser("native")
    n.add_argument("--model", help="model.joblib (default: the small test model)")
    n.add_argument("--label", default="current")
    n.add_argument("--backlog", type=int, default=20_000)
    n.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    summary = sub.add_parser("py-spy-summary")
    summary.add_argument("file")
    args = parser.parse_args()
    if args.command == "stream":
        overrides = dict(item.split("=", 1) for item in args.set)
        result = stream(
            args.model, args.backlog, args.rate, args.seconds, args.py_spy, overrides, args.label
        )
        if args.py_spy:
            result["py_spy_summary"] = summarise_py_spy(args.py_spy)
        print(json.dumps(result, indent=2))
        print(write_results(f"profile_stream_{args.label}", result))
    elif args.command == "native":
        overrides = dict(item.split("=", 1) for item in args.set)
        result = native(args.model, args.backlog, overrides, args.label)
        print(json.dumps(result, indent=2))
        print(write_results(f"profile_native_{args.label}", result))
    elif args.command == "py-spy-summary":
        print(json.dumps(summarise_py_spy(args.file), indent=2))
    else:
        if args.command is None:
            args = m.parse_args([])
        result = micro(args.model, args.sizes, args.label)
        print_micro(result)
        print(write_results(f"profile_scorer_{args.label}", result))


if __name__ == "__main__":
    main()
