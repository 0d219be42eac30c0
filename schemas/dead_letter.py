"""DeadLetter: an input that could not be scored, with the reason, kept for inspection/replay."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

ErrorKind = Literal[
    "empty",
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "post_call_field",
    "invalid_fields",
]


class FieldError(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str = Field(description="Dotted path of the offending field; '' for the whole event.")
    rule: str = Field(description="Machine-readable rule name, e.g. 'greater_than_equal'.")
    message: str


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    payload: bytes = Field(description="Original value bytes (base64 in JSON).")
    payload_size: int = Field(ge=0, description="Size of the original value in bytes.")
    payload_truncated: bool = Field(
        default=False, description="True when only the first bytes of an oversized value are kept."
    )
    key: bytes | None = None
    source_topic: str
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    error_kind: ErrorKind
    message: str
    field_errors: list[FieldError] = Field(default_factory=list)
    received_at: AwareDatetime
