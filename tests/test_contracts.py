"""The message contracts: every validation rule, with errors that name the field and the rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas import (
    CATEGORIES,
    FEATURES,
    POST_CALL_FIELDS,
    CallOutcome,
    CallTask,
    DeadLetter,
    InvalidEvent,
    ModelManifest,
    ProspectEvent,
    decode_prospect,
    feature_contract_hash,
    task_id_for,
)
from schemas.decode import DEFAULT_MAX_EVENT_BYTES
from testkit.factories import valid_event


def encode(event: object) -> bytes:
    return json.dumps(event).encode()


def rejected(raw: bytes, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as excinfo:
        decode_prospect(raw, max_bytes)
    return excinfo.value


def only_field_error(error: InvalidEvent) -> tuple[str, str, str]:
    assert error.kind == "invalid_fields"
    assert len(error.field_errors) == 1, error.field_errors
    fe = error.field_errors[0]
    assert fe.field in error.message
    return fe.field, fe.rule, fe.message


def test_valid_event_decodes_and_exposes_only_features():
    event = decode_prospect(encode(valid_event()))
    assert event.event_id == "evt-1"
    assert tuple(event.features()) == FEATURES
    assert event.occurred_at.tzinfo is not None


def test_unknown_extra_fields_are_ignored_for_forward_compatibility():
    event = decode_prospect(encode(valid_event(campaign_name="autumn", score_hint=3)))
    assert not hasattr(event, "campaign_name")


@pytest.mark.parametrize("field", POST_CALL_FIELDS)
def test_post_call_fields_are_rejected(field):
    error = rejected(encode(valid_event(**{field: 120 if field == "duration" else "yes"})))
    assert error.kind == "post_call_field"
    assert [fe.field for fe in error.field_errors] == [field]
    assert "post-call" in error.message and "leak" in error.message


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"not json at all", "not_json"),
        (b'{"age": 41,', "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (b'"a string"', "not_object"),
        (b"\xff\xfe\x00garbage", "not_utf8"),
    ],
)
def test_structurally_bad_payloads(raw, kind):
    error = rejected(raw)
    assert error.kind == kind
    assert error.message


def test_payload_over_the_maximum_is_rejected_before_parsing():
    raw = encode(valid_event(padding="x" * 2000))
    error = rejected(raw, max_bytes=1024)
    assert error.kind == "too_large"
    assert str(len(raw)) in error.message and "1024" in error.message


def test_missing_required_field_names_the_field():
    event = valid_event()
    del event["balance"]
    assert only_field_error(rejected(encode(event)))[:2] == ("balance", "missing")


def test_wrong_type_names_the_field():
    field, rule, _ = only_field_error(rejected(encode(valid_event(age="forty"))))
    assert (field, rule) == ("age", "int_type")


def test_numbers_as_strings_are_rejected_strictly():
    assert only_field_error(rejected(encode(valid_event(balance="1200"))))[0] == "balance"


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("age", 17, "greater_than_equal"),
        ("age", 101, "less_than_equal"),
        ("day", 0, "greater_than_equal"),
        ("day", 32, "less_than_equal"),
        ("campaign", 0, "greater_than_equal"),
        ("pdays", -2, "greater_than_equal"),
        ("previous", -1, "greater_than_equal"),
    ],
)
def test_out_of_range_numbers(field, value, rule):
    assert only_field_error(rejected(encode(valid_event(**{field: value}))))[:2] == (field, rule)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(literal):
    raw = encode(valid_event()).replace(b'"balance": 1200', f'"balance": {literal}'.encode())
    field, _, message = only_field_error(rejected(raw))
    assert field == "balance"
    assert "NaN and Infinity" in message


@pytest.mark.parametrize("field", sorted(CATEGORIES))
def test_category_outside_the_uci_set_lists_the_allowed_values(field):
    field_name, rule, message = only_field_error(rejected(encode(valid_event(**{field: "zzz"}))))
    assert (field_name, rule) == (field, "literal_error")
    for allowed in CATEGORIES[field]:
        assert f"'{allowed}'" in message


def test_uci_value_sets_are_exact():
    assert CATEGORIES["month"] == (
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    )  # fmt: skip
    assert set(CATEGORIES["job"]) >= {"admin.", "blue-collar", "self-employed", "unknown"}
    assert CATEGORIES["poutcome"] == ("unknown", "other", "failure", "success")
    assert "unknown" not in CATEGORIES["marital"]


def test_timestamp_needs_a_timezone():
    field, rule, _ = only_field_error(
        rejected(encode(valid_event(occurred_at="2026-11-26T09:00:00")))
    )
    assert (field, rule) == ("occurred_at", "timezone_aware")


def test_every_error_is_reported_not_just_the_first():
    error = rejected(encode(valid_event(age=5, job="pilot", month="foo")))
    assert {fe.field for fe in error.field_errors} == {"age", "job", "month"}


def test_task_id_depends_on_event_id_alone():
    assert task_id_for("evt-1") == task_id_for("evt-1")
    assert task_id_for("evt-1") != task_id_for("evt-2")
    task = CallTask(
        task_id=task_id_for("evt-1"),
        event_id="evt-1",
        prospect_id="c",
        score=0.3,
        priority="high",
        percentile=95.0,
        model_version=1,
        scored_at=datetime.now(UTC),
    )
    assert CallTask.model_validate_json(task.model_dump_json()) == task
    with pytest.raises(ValidationError):
        CallTask.model_validate({**task.model_dump(), "score": 1.5})


def test_call_outcome_accepts_duration_and_needs_a_reference():
    outcome = {
        "task_id": task_id_for("evt-1"),
        "prospect_id": "c",
        "called_at": "2026-11-26T10:00:00Z",
        "subscribed": True,
        "duration_seconds": 240,
    }
    assert CallOutcome.model_validate_json(json.dumps(outcome)).duration_seconds == 240
    del outcome["task_id"]
    with pytest.raises(ValidationError, match="event_id' or 'task_id"):
        CallOutcome.model_validate_json(json.dumps(outcome))


OUTCOME = {
    "task_id": task_id_for("evt-1"),
    "prospect_id": "c",
    "called_at": "2026-11-26T10:00:00Z",
}


@pytest.mark.parametrize(
    "fields",
    [
        {"subscribed": False, "duration_seconds": 30},  # today's outcomes: a reached call
        {"disposition": "reached", "subscribed": True, "duration_seconds": 0},
        {"disposition": "no_answer"},
        {"disposition": "busy", "subscribed": False},  # a dialer that always sends it
        {"disposition": "voicemail", "duration_seconds": 25},
        {"disposition": "callback", "callback_at": "2026-11-27T09:00:00+01:00"},
        {"disposition": "wrong_number"},
        {"disposition": "do_not_call", "notes": "asked to be removed"},
    ],
)
def test_every_disposition_has_a_valid_outcome(fields):
    outcome = CallOutcome.model_validate_json(json.dumps({**OUTCOME, **fields}))
    assert outcome.reached == (outcome.disposition == "reached")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"duration_seconds": 30}, "a reached call needs subscribed"),
        ({"subscribed": True}, "a reached call needs duration_seconds"),
        ({"disposition": "reached", "subscribed": None, "duration_seconds": 3}, "needs subscribed"),
        ({"disposition": "no_answer", "subscribed": True}, "'subscribed' true needs disposition"),
        ({"disposition": "callback"}, "'callback' needs 'callback_at'"),
        (
            {"disposition": "callback", "callback_at": "2026-11-26T09:59:00Z"},
            "must not be before 'called_at'",
        ),
        ({"disposition": "busy", "callback_at": "2026-11-27T09:00:00Z"}, "only for disposition"),
        ({"disposition": "hung_up"}, "disposition"),
    ],
)
def test_an_inconsistent_outcome_names_the_rule(fields, message):
    with pytest.raises(ValidationError, match=message):
        CallOutcome.model_validate_json(json.dumps({**OUTCOME, **fields}))


def test_the_outcome_json_schema_states_the_disposition_rules():
    rules = CallOutcome.model_json_schema()["allOf"]
    assert rules[0]["then"] == {"required": ["subscribed", "duration_seconds"]}
    assert rules[1]["then"] == {"required": ["callback_at"]}


def manifest_fields(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "model_name": "term-deposit",
        "version": 1,
        "created_at": "2026-11-26T00:00:00Z",
        "published_at": "2026-11-26T00:00:00Z",
        "artifact_sha256": "a" * 64,
        "key_id": "c" * 16,
        "sequence": 1,
        "signature": "b" * 128,
        "sklearn_version": "1.9.1",
        "python_version": "3.11.7",
        "feature_contract_hash": feature_contract_hash(),
        "tier_cut_points": {"high": 0.4, "medium": 0.2},
        "training_window": {"start": "2008-05", "end": "2010-11", "rows": 45211},
        "artifact_uri": "file:///tmp/model.joblib",
    }
    fields.update(overrides)
    return fields


def test_manifest_round_trips_with_inline_bytes():
    manifest = ModelManifest.model_validate(
        manifest_fields(artifact_uri=None, artifact_inline=b"\x00\x01joblib")
    )
    again = ModelManifest.model_validate_json(manifest.model_dump_json())
    assert again.artifact_inline == b"\x00\x01joblib"


def test_manifest_without_signature_is_invalid():
    fields = manifest_fields()
    del fields["signature"]
    with pytest.raises(ValidationError, match="signature"):
        ModelManifest.model_validate(fields)


@pytest.mark.parametrize("digest", ["abc", "A" * 64, "g" * 64, ""])
def test_manifest_with_malformed_sha256_is_invalid(digest):
    with pytest.raises(ValidationError, match="artifact_sha256"):
        ModelManifest.model_validate(manifest_fields(artifact_sha256=digest))


def test_manifest_needs_exactly_one_artifact_location():
    with pytest.raises(ValidationError, match="exactly one"):
        ModelManifest.model_validate(manifest_fields(artifact_inline=b"x"))
    with pytest.raises(ValidationError, match="exactly one"):
        ModelManifest.model_validate(manifest_fields(artifact_uri=None))


def test_dead_letter_keeps_the_original_bytes():
    letter = DeadLetter(
        payload=b"\xff\xfe not json",
        payload_size=12,
        source_topic="prospects",
        source_partition=0,
        source_offset=7,
        error_kind="not_utf8",
        message="payload is not UTF-8",
        received_at=datetime.now(UTC),
    )
    assert DeadLetter.model_validate_json(letter.model_dump_json()).payload == b"\xff\xfe not json"


def test_feature_contract_hash_is_stable_and_sensitive():
    assert feature_contract_hash() == feature_contract_hash()
    assert len(feature_contract_hash()) == 64
    assert "duration" not in FEATURES and "y" not in FEATURES
    assert ProspectEvent.model_json_schema()["properties"]["month"]["enum"][0] == "jan"
