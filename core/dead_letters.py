"""Dead letters, as the scorer and the monitor both make them: a rejected record's bytes, origin
and reason (`dead_letter_for`), and the record that carries one to its topic
(`dead_letter_record`). One rule for both, so a prospect's and an outcome's dead letters read
the same.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from core.topic_writer import Outgoing
from schemas import DeadLetter
from schemas.decode import InvalidEvent


class SourceRecord(Protocol):
    """Where a dead letter's bytes came from: a prospect the scorer consumed or a topic reader's
    Record (an outcome read by the monitor)."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def dead_letter_for(
    message: SourceRecord, error: InvalidEvent, max_bytes: int, now: datetime
) -> DeadLetter:
    """The dead letter of any rejected Kafka record: its bytes (truncated), origin and reason."""
    payload = message.value or b""
    truncated = len(payload) > max_bytes
    return DeadLetter(
        payload=payload[:max_bytes] if truncated else payload,
        payload_size=len(payload),
        payload_truncated=truncated,
        key=message.key,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        error_kind=error.kind,
        message=error.message,
        field_errors=error.field_errors,
        received_at=now,
    )


def dead_letter_record(topic: str, letter: DeadLetter) -> Outgoing:
    """A dead letter as a record: keyed like its source, its reason in the error_kind header."""
    return Outgoing(
        topic=topic,
        key=letter.key,
        value=letter.model_dump_json().encode(),
        headers=[("error_kind", letter.error_kind.encode())],
    )
