"""Consumed records -> one Arrow table in its fixed schema, sorted so a re-run is byte-identical."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from core.topic_reader import Record
from lake.tables import Table
from schemas.decode import InvalidEvent


def _text(raw: bytes | None) -> str | None:
    # Invalid UTF-8 stays visible (\xff) rather than failing the file or vanishing.
    return None if raw is None else raw.decode("utf-8", errors="backslashreplace")


def _row(table: Table, record: Record) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kafka_topic": record.topic,
        "kafka_partition": record.partition,
        "kafka_offset": record.offset,
        "kafka_timestamp": record.timestamp_ms,
        "kafka_key": _text(record.key),
        "value": _text(record.value),
    }
    try:
        fields = table.parse(record.value)
    except InvalidEvent as exc:
        return row | {"valid": False, "invalid_kind": exc.kind, "invalid_reason": exc.message}
    return row | {"valid": True} | fields


def to_arrow(
    table: Table, records: Iterable[Record], columns: Sequence[str] | None = None
) -> pa.Table:
    """Every record as a row (none dropped), ordered by topic, partition and offset; only
    `columns` when given (a reader that needs a few builds only those)."""
    schema = table.schema
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
    values: dict[str, list[Any]] = {name: [] for name in schema.names}
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        row = _row(table, record)
        for name, cells in values.items():
            cells.append(row.get(name))
    return pa.Table.from_pydict(values, schema=schema)
