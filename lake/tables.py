"""The exported tables: which topics feed each one, its contract and its fixed Arrow schema.

Every table starts with the same columns: the record's Kafka coordinates and key, the raw value
as text, and whether the value parses with the table's contract (`valid`, and if not, why).
The contract's fields follow, flattened into typed columns; a record that does not parse keeps
them null and is never dropped. The prediction log and the outcomes end with `event_key` and
`task_key` (`schemas.join_key` of the ids), so labelled history joins millions of calls on
integers; days exported before them read as null keys, derived again from the ids.
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
    join_key,
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
    derived: tuple[pa.Field, ...] = ()  # computed from the contract's fields (join keys)

    @property
    def schema(self) -> pa.Schema:
        fields = [
            *KAFKA_FIELDS,
            *(pa.field(c.column, c.type) for c in self.columns),
            *self.derived,
        ]
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


# The event's and the task's ids as schemas.join_key integers: labelled history joins on them.
JOIN_KEYS: tuple[pa.Field, ...] = (
    pa.field("event_key", pa.int64()),
    pa.field("task_key", pa.int64()),
)


def _keys(record: PredictionRecord | CallOutcome) -> dict[str, int | None]:
    return {"event_key": join_key(record.event_id), "task_key": join_key(record.task_id)}


def _parse_prediction(raw: bytes | None) -> dict[str, Any]:
    """A prediction whose features also satisfy the prospect contract, as feature_<name>."""
    record, event = decode_prediction(raw, NO_SIZE_LIMIT)
    return cells(record, PREDICTION_COLUMNS) | cells(event, FEATURE_COLUMNS) | _keys(record)


def _parse_outcome(raw: bytes | None) -> dict[str, Any]:
    outcome = decode_json(raw, CallOutcome, "call outcome", NO_SIZE_LIMIT)
    return cells(outcome, OUTCOME_COLUMNS) | _keys(outcome)


OUTCOME_COLUMNS = contract_columns(CallOutcome)


def _build() -> tuple[Table, ...]:
    prospect_columns, parse_prospect = _plain(ProspectEvent, "prospect event")
    task_columns, parse_task = _plain(CallTask, "call task")
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
            JOIN_KEYS,
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
            OUTCOME_COLUMNS,
            _parse_outcome,
            JOIN_KEYS,
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
