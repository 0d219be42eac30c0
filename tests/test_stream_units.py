"""Pure parts of the streamer: batch scoring, dedupe window, model watcher decisions, HTTP logic."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from registry.artifact import dump_artifact
from registry.keys import load_signing_key
from registry.signing import build_manifest, sign_manifest
from registry.trust import ManifestRecord
from schemas import task_id_for
from streamer.dedupe import RecentIds
from streamer.metrics import StreamMetrics
from streamer.model_watcher import ModelWatcher
from streamer.scoring import Incoming, ServedModel, decode_batch, feature_frame, score_events
from streamer.web import authorized, score_request
from testkit.factories import small_artifact, valid_event
from testkit.harness import as_event

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def _incoming(value: bytes | None, offset: int = 0) -> Incoming:
    return Incoming(b"k", value, "prospects", 0, offset, 1.0)


def _served(settings, version: int = 1, seed: int = 1, offset: int = 0) -> ServedModel:
    artifact = small_artifact(version, seed=seed)
    manifest = build_manifest(dump_artifact(artifact), artifact.metadata, settings, version)
    return ServedModel(artifact, manifest, offset, NOW)


def test_decode_batch_puts_every_message_in_exactly_one_list():
    messages = [
        _incoming(json.dumps(valid_event(event_id="a")).encode(), 0),
        _incoming(b"", 1),
        _incoming(b"x" * 3000, 2),
        _incoming(None, 3),
    ]
    valid, dead = decode_batch(messages, max_bytes=1024, now=NOW)
    assert [m.offset for m, _ in valid] == [0]
    assert [(d.source_offset, d.error_kind) for d in dead] == [
        (1, "empty"),
        (2, "too_large"),
        (3, "empty"),
    ]
    big = dead[1]
    assert big.payload_truncated and len(big.payload) == 1024 and big.payload_size == 3000


def test_score_events_matches_offline_predict_in_one_batch(settings):
    served = _served(settings)
    events = [
        as_event(valid_event(event_id=f"e{i}", age=20 + i, balance=i * 900)) for i in range(50)
    ]
    tasks = score_events(events, served, NOW)
    offline = served.artifact.predict(feature_frame(events))
    for event, task, expected in zip(events, tasks, offline, strict=True):
        one = served.artifact.predict(feature_frame([event]))[0]
        assert task.score == pytest.approx(float(expected), rel=1e-12)
        assert task.score == pytest.approx(float(one), rel=1e-9)
        assert task.task_id == task_id_for(event.event_id) and task.model_version == 1
    assert score_events([], served, NOW) == []


def test_recent_ids_window_is_bounded():
    recent = RecentIds(3)
    assert [recent.seen(x) for x in "abca"] == [False, False, False, True]
    assert not recent.seen("d")  # evicts "a"
    assert len(recent) == 3 and "a" not in recent
    assert not recent.seen("a")
    off = RecentIds(0)
    assert not off.seen("a") and not off.seen("a")


def _record(offset, manifest):
    return ManifestRecord(offset, manifest)


def test_watcher_follows_newest_record_and_refuses_bad_ones(settings):
    metrics = StreamMetrics()
    watcher = ModelWatcher(settings, metrics)
    v1 = _served(settings, 1).manifest
    v2 = _served(settings, 2, seed=2).manifest
    forged = v2.model_copy(update={"version": 3, "signature": "f" * 128})
    old_sklearn = v2.model_copy(update={"version": 4, "sklearn_version": "0.24.2", "sequence": 4})
    old_sklearn = sign_manifest(old_sklearn, *load_signing_key(settings))
    # catch-up: v1, v2, forged -> the newest *valid* one (v2) wins, forged counted
    watcher.step([_record(0, v1), _record(1, v2), _record(2, forged)], at_end=False)
    assert watcher.current is None  # nothing loaded before reaching the end
    watcher.step([], at_end=True)
    assert watcher.current is not None and watcher.current.version == 2
    watcher.step([_record(3, old_sklearn), ManifestRecord(4, None, "malformed")], at_end=True)
    assert watcher.current.version == 2
    unsigned_promote = v1.model_copy(update={"action": "promote", "sequence": 5})  # signed too
    watcher.step([_record(5, unsigned_promote)], at_end=True)
    assert watcher.current.version == 2
    promoted = sign_manifest(unsigned_promote, *load_signing_key(settings))
    watcher.step([_record(6, promoted)], at_end=True)  # a rollback: newest record, older version
    assert watcher.current.version == 1 and watcher.current.record_offset == 6
    samples = {
        (s.labels.get("result"), s.labels.get("reason")): s.value
        for s in metrics.reloads.collect()[0].samples
        if s.name.endswith("_total")
    }
    assert samples[("rejected", "signature")] == 2
    assert samples[("rejected", "sklearn_version")] == 1
    assert samples[("rejected", "malformed")] == 1
    assert samples[("loaded", "")] == 2
    # the raw bytes of an older signed record, produced again: refused, v1 keeps serving
    watcher.step([_record(7, v2)], at_end=True)
    assert watcher.current.version == 1
    replays = metrics.reloads.labels("rejected", "replay")._value.get()
    assert replays == 1


def test_watcher_pinned_version(settings):
    pinned = settings.model_copy(update={"pinned_model_version": 1})
    watcher = ModelWatcher(pinned, StreamMetrics())
    v1 = _served(settings, 1).manifest
    v2 = _served(settings, 2, seed=2).manifest
    watcher.step([_record(0, v1), _record(1, v2)], at_end=True)
    assert watcher.current is not None and watcher.current.version == 1


def test_score_request_single_list_and_errors(settings):
    served = _served(settings)
    status, doc = score_request(json.dumps(valid_event()).encode(), served, settings)
    assert (
        status == 200 and doc["model_version"] == 1 and doc["priority"] in {"high", "medium", "low"}
    )
    status, doc = score_request(
        json.dumps([valid_event(), valid_event()]).encode(), served, settings
    )
    assert status == 200 and len(doc) == 2
    status, doc = score_request(b"{nope", served, settings)
    assert status == 422
    status, doc = score_request(json.dumps([valid_event(age="41")]).encode(), served, settings)
    assert status == 422 and doc["errors"][0]["field_errors"][0]["field"] == "age"
    status, _ = score_request(b"[]", served, settings)
    assert status == 422


def test_bearer_token(settings):
    assert authorized(settings, None)
    with_token = settings.model_copy(update={"api_token": SecretStr("t0k")})
    assert authorized(with_token, "Bearer t0k")
    assert not authorized(with_token, None) and not authorized(with_token, "Bearer nope")


def test_a_do_not_call_outcome_is_routed_and_becomes_the_prospects_objection(settings):
    from schemas import CallOutcome, DoNotCallEntry
    from streamer.routing import OUTCOME_SOURCE, route_outcomes
    from streamer.scoring import Incoming

    def record(offset: int, **fields: object) -> Incoming:
        outcome = CallOutcome(
            task_id="t1", prospect_id="p1", called_at="2026-11-26T10:00:00Z", **fields
        )
        return Incoming(b"p1", outcome.model_dump_json().encode(), "call-outcomes", 0, offset)

    result = route_outcomes(
        [record(0, disposition="do_not_call"), record(1, disposition="no_answer")], settings
    )

    assert len(result.routed) == 2 and result.invalid == 0
    (objection,) = [r for r in result.outgoing if r.topic == settings.topic_do_not_call]
    assert objection.key == b"p1"
    entry = DoNotCallEntry.model_validate_json(objection.value)
    assert (entry.prospect_id, entry.source) == ("p1", OUTCOME_SOURCE)
    assert entry.requested_at.isoformat() == "2026-11-26T10:00:00+00:00"
