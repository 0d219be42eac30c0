"""Hot reload in a running worker: a new version mid-stream, and refused manifests."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter

import pytest

from core.kafka import ensure_topics
from registry.artifact import dump_artifact
from registry.keys import load_signing_key
from registry.model_topic import produce_manifest
from registry.signing import build_manifest, sign_manifest
from streamer.scoring import feature_frame
from testkit.factories import small_artifact, valid_event
from testkit.harness import as_event, collect, event_bytes, produce, publish_model, worker_settings


def _events(prefix: str, n: int) -> list[dict]:
    return [
        valid_event(
            event_id=f"{prefix}-{i}",
            prospect_id=f"{prefix}-p-{i}",  # a prospect per event: each one opens a task
            age=18 + i % 70,
            balance=(i * 137) % 20000 - 2000,
            campaign=1 + i % 9,
        )
        for i in range(n)
    ]


def test_new_version_mid_stream_scores_every_event_once(kafka_settings, tmp_path, workers):
    # dedupe off: a double-scored event would show up as a second task
    settings = worker_settings(kafka_settings, tmp_path, dedupe_window=0)
    ensure_topics(settings)
    v1 = publish_model(settings, version=1, seed=1)
    worker = workers(settings)
    worker.wait_ready()
    events = _events("r", 600)
    published_v2 = threading.Event()
    v2_holder = {}

    def publish_v2_later() -> None:
        time.sleep(1.0)
        v2_holder["v2"] = publish_model(settings, version=2, seed=2)
        published_v2.set()

    thread = threading.Thread(target=publish_v2_later)
    thread.start()
    for start in range(0, len(events), 20):  # about 400 events/s for 1.5 s
        produce(settings, [event_bytes(e) for e in events[start : start + 20]])
        time.sleep(0.05)
    thread.join(30)
    assert published_v2.is_set()
    worker.wait_until(
        lambda: worker.metric("callscore_model_version") == 2, 30, "v2 loaded by the worker"
    )
    tail = _events("tail", 20)  # certainly after the swap
    produce(settings, [event_bytes(e) for e in tail])
    everything = events + tail
    tasks = collect(
        settings,
        settings.task_topics.values(),
        lambda r: len(r) >= len(everything),
        timeout=60,
        settle=1.0,
    )
    counts = Counter(t.json()["event_id"] for t in tasks)
    assert counts == Counter(e["event_id"] for e in everything)  # each exactly once, no gap
    versions = Counter(t.json()["model_version"] for t in tasks)
    assert set(versions) == {1, 2}, versions
    frame = feature_frame([as_event(e) for e in everything])
    offline = {
        1: dict(zip([e["event_id"] for e in everything], v1.predict(frame), strict=True)),
        2: dict(
            zip([e["event_id"] for e in everything], v2_holder["v2"].predict(frame), strict=True)
        ),
    }
    for task in tasks:
        expected = offline[task.json()["model_version"]][task.json()["event_id"]]
        assert task.json()["score"] == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
    assert all(
        t.json()["model_version"] == 2
        for t in tasks
        if t.json()["event_id"] in {e["event_id"] for e in tail}
    )


def _bad_manifests(settings):
    signer = load_signing_key(settings)
    artifact = small_artifact(2, seed=2)
    data = dump_artifact(artifact)
    good = build_manifest(data, artifact.metadata, settings)

    sequences = iter(range(2, 10))  # above v1's: refused for their content, not as replays

    def resigned(**update):
        unsigned = good.model_copy(update={**update, "sequence": next(sequences)})
        return sign_manifest(unsigned, *signer)

    truncated = data[: len(data) // 2]
    return {
        "signature": good.model_copy(update={"signature": "f" * 128}),
        "sha256": resigned(artifact_sha256=hashlib.sha256(b"other").hexdigest()),
        "feature_contract": resigned(feature_contract_hash="b" * 64),
        "artifact": resigned(
            artifact_inline=truncated, artifact_sha256=hashlib.sha256(truncated).hexdigest()
        ),
    }


def test_refused_manifests_keep_v1_serving(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    publish_model(settings, version=1)
    worker = workers(settings)
    worker.wait_ready()
    bad = _bad_manifests(settings)
    for manifest in bad.values():
        produce_manifest(settings, manifest)  # as they are: not re-signed
    worker.wait_until(
        lambda: worker.metric("callscore_model_reloads_total", 'result="rejected"') == len(bad),
        30,
        "four refusals",
    )
    for reason in bad:
        assert worker.metric("callscore_model_reloads_total", f'reason="{reason}"') == 1, reason
    events = _events("after", 30)
    produce(settings, [event_bytes(e) for e in events])
    tasks = collect(settings, settings.task_topics.values(), lambda r: len(r) >= 30, 30)
    assert {t.json()["model_version"] for t in tasks} == {1}
    assert worker.served_version() == 1
    assert "refused" in worker.log()


def test_promote_rolls_back_a_running_worker(kafka_settings, tmp_path, workers):
    from registry.model_topic import promote

    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    publish_model(settings, version=1, seed=1)
    publish_model(settings, version=2, seed=2)
    worker = workers(settings)
    worker.wait_ready()

    def serving() -> int:
        return worker.served_version()

    worker.wait_until(lambda: serving() == 2, 30, "v2 served")
    promote(settings, 1)  # what `callscore models promote 1` does
    worker.wait_until(lambda: serving() == 1, 30, "v1 served again after promote")
    produce(settings, [event_bytes(valid_event(event_id="after-rollback"))])
    tiers = list(settings.task_topics.values())
    tasks = collect(settings, tiers, lambda r: len(r) >= 1, timeout=30)
    assert [t.json()["model_version"] for t in tasks] == [1]
