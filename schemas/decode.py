"""Bytes -> a contract (event, outcome, prediction), or an InvalidEvent naming field and rule.

Used by the stream (dead letters) and the HTTP API (422 responses) alike.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.dead_letter import ErrorKind, FieldError
from schemas.do_not_call import DoNotCallEntry
from schemas.outcome import CallOutcome
from schemas.prediction import PredictionRecord
from schemas.prospect import ProspectEvent

Contract = TypeVar("Contract", bound=BaseModel)

DEFAULT_MAX_EVENT_BYTES = 64 * 1024


class InvalidEvent(ValueError):
    def __init__(
        self, kind: ErrorKind, message: str, field_errors: list[FieldError] | None = None
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.field_errors = field_errors or []


def _field_error(error: Any) -> FieldError:
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "post_call_field":
        loc = error["ctx"]["field"]
    message = error["msg"]
    value = error.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        message = f"{message} (NaN and Infinity are not valid JSON numbers)"
    return FieldError(field=loc, rule=error["type"], message=message)


def field_errors_from(exc: ValidationError) -> list[FieldError]:
    return [_field_error(e) for e in exc.errors(include_url=False)]


def _summary(errors: list[FieldError]) -> str:
    return "; ".join(f"{e.field or '(event)'}: {e.message} [{e.rule}]" for e in errors)


def decode_json(raw: bytes | None, contract: type[Contract], what: str, max_bytes: int) -> Contract:
    """Validate one Kafka value against a contract. Raises InvalidEvent naming field and rule."""
    if not raw:
        raise InvalidEvent("empty", "empty payload: expected a JSON object")
    if len(raw) > max_bytes:
        raise InvalidEvent(
            "too_large", f"payload is {len(raw)} bytes; the maximum is {max_bytes} bytes"
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(
            "not_utf8", f"payload is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    try:
        return contract.model_validate_json(raw)
    except ValidationError as exc:
        errors = field_errors_from(exc)
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise InvalidEvent("not_json", f"payload is not JSON: {first['msg']}") from None
        if first["type"] == "model_type":
            raise InvalidEvent(
                "not_object", f"payload is JSON but not an object: {first['msg']}"
            ) from None
        kind: ErrorKind = (
            "post_call_field"
            if any(e.rule == "post_call_field" for e in errors)
            else "invalid_fields"
        )
        raise InvalidEvent(kind, f"invalid {what}: {_summary(errors)}", errors) from None


def decode_prospect(raw: bytes | None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> ProspectEvent:
    """A prospect event from one Kafka value, or InvalidEvent (the stream dead-letters it)."""
    return decode_json(raw, ProspectEvent, "prospect event", max_bytes)


def decode_outcome(raw: bytes | None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> CallOutcome:
    """A call outcome from one Kafka value, or InvalidEvent (never counted as a label)."""
    return decode_json(raw, CallOutcome, "call outcome", max_bytes)


def decode_do_not_call(
    key: bytes | None, raw: bytes | None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> DoNotCallEntry | None:
    """A do-not-call record: its entry, or None for a tombstone (the entry lifted); InvalidEvent
    when it has no key, or names another prospect than its key."""
    if key is None:
        raise InvalidEvent("invalid_fields", "a do-not-call record needs its prospect_id as key")
    if raw is None:
        return None
    entry = decode_json(raw, DoNotCallEntry, "do-not-call entry", max_bytes)
    if entry.prospect_id.encode() != key:
        raise InvalidEvent(
            "invalid_fields",
            f"key {key.decode(errors='replace')!r} is not the entry's prospect_id "
            f"{entry.prospect_id!r}",
            [FieldError(field="prospect_id", message="must equal the record's key", rule="key")],
        )
    return entry


def decode_prediction(
    raw: bytes | None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> tuple[PredictionRecord, ProspectEvent]:
    """A prediction-log record whose features also satisfy the event contract, and that event.

    The record's own schema only checks the feature names; a training row or a lake row needs
    their values to be what a ProspectEvent allows.
    """
    record = decode_json(raw, PredictionRecord, "prediction record", max_bytes)
    try:
        event = ProspectEvent.model_validate(
            {
                **record.features,
                "event_id": record.event_id,
                "prospect_id": record.prospect_id,
                "occurred_at": record.occurred_at,
            }
        )
    except ValidationError as exc:
        errors = field_errors_from(exc)
        summary = "; ".join(f"features.{e.field}: {e.message} [{e.rule}]" for e in errors)
        raise InvalidEvent(
            "invalid_fields", f"invalid prediction record: {summary}", errors
        ) from None
    return record, event
