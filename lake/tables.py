"""The exported tables: which topics feed each one, its contract and its fixed Arrow schema.

Every table starts with the same columns: the record's Kafka coordinates and key, the raw value
as text, and whether the value parses with the table's contract (`valid`, and if not, why).
The contract's fields follow, flattened into typed columns; a record that does not parse keeps
them null and is never dropped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from core.settings import Settings
from lake.schema import ContractColumn, cells, contract_columns
from schemas import (
    FEATURE_COLUMN_PREFIX,
    CallOutcome,
    CallTask,
    DeadLetter,
    PredictionRecord,
    ProspectEvent,
)
from schemas.decode import decode_json, decode_prediction
from schemas.prospect import EVENT_METADATA_FIELDS

# The stream's size limit is its own policy: an archived record is judged by its contract only.
NO_SIZE_LIMIT = sys.maxsize

KAFKA_FIELDS: tuple[pa.Field, ...] = (
    pa.field("kafka_topic", pa.string()),
    pa.field("kafka_partition", pa.int32()),
    pa.field("kafka_offset", pa.int64()),
    pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
    pa.field("kafka_key", pa.string()),
    pa.field("value", pa.string()),
    pa.field("valid", pa.bool_()),
    pa.field("invalid_kind", pa.string()),
    pa.field("invalid_reason", pa.string()),
)


@dataclass(frozen=True)
class Table:
    name: str
    contract: type[BaseModel]
    topics: Callable[[Settings], tuple[str, ...]]
    columns: tuple[ContractColumn, ...]
    parse: Callable[[bytes | None], dict[str, Any]]  # contract columns, or InvalidEvent

    @property
    def schema(self) -> pa.Schema:
        fields = [*KAFKA_FIELDS, *(pa.field(c.column, c.type) for c in self.columns)]
        return pa.schema(fields, metadata={"callscore.contract": self.contract.__name__})


def _plain(
    contract: type[BaseModel], what: str
) -> tuple[tuple[ContractColumn, ...], Callable[[bytes | None], dict[str, Any]]]:
    columns = contract_columns(contract)

    def parse(raw: bytes | None) -> dict[str, Any]:
        return cells(decode_json(raw, contract, what, NO_SIZE_LIMIT), columns)

    return columns, parse


PREDICTION_COLUMNS = contract_columns(PredictionRecord, exclude=("features",))
FEATURE_COLUMNS = contract_columns(
    ProspectEvent, prefix=FEATURE_COLUMN_PREFIX, exclude=EVENT_METADATA_FIELDS
)


def _parse_prediction(raw: bytes | None) -> dict[str, Any]:
    """A prediction whose features also satisfy the prospect contract, as feature_<name>."""
    record, event = decode_prediction(raw, NO_SIZE_LIMIT)
    return cells(record, PREDICTION_COLUMNS) | cells(event, FEATURE_COLUMNS)


def _build() -> tuple[Table, ...]:
    prospect_columns, parse_prospect = _plain(ProspectEvent, "prospect event")
    task_columns, parse_task = _plain(CallTask, "call task")
    outcome_columns, parse_outcome = _plain(CallOutcome, "call outcome")
    letter_columns, parse_letter = _plain(DeadLetter, "dead letter")
    return (
        Table(
            "prospects",
            ProspectEvent,
            lambda s: (s.topic_prospects,),
            prospect_columns,
            parse_prospect,
        ),
        Table(
            "predictions",
            PredictionRecord,
            lambda s: (s.topic_predictions,),
            PREDICTION_COLUMNS + FEATURE_COLUMNS,
            _parse_prediction,
        ),
        Table(
            "call_tasks",
            CallTask,
            lambda s: tuple(s.task_topics.values()),
            task_columns,
            parse_task,
        ),
        Table(
            "outcomes",
            CallOutcome,
            lambda s: (s.topic_outcomes,),
            outcome_columns,
            parse_outcome,
        ),
        Table(
            "dead_letters",
            DeadLetter,
            lambda s: (s.topic_dead_letters, s.topic_outcome_dead_letters),
            letter_columns,
            parse_letter,
        ),
    )


TABLES: tuple[Table, ...] = _build()
TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}

for _table in TABLES:
    _names = _table.schema.names
    assert len(set(_names)) == len(_names), f"{_table.name}: a contract field shadows a column"
