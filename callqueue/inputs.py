"""What reaches a prospect's queue partition, and where: the records of the queue's input topic.

The queue of a prospect has one writer, the replica that owns its partition. A prospect's events
come from producers whose partitioners differ (librdkafka's default is CRC32, Java, kafkajs and
aiokafka use murmur2), and its outcomes and do-not-call entries from other producers again, so
the topics they arrive on are not co-partitioned. Every input is therefore written again to the
input topic (Settings.topic_queue_inputs) at an explicit partition, `partition_for(prospect_id)`
(murmur2, as Kafka's Java client computes it for that key), after it was validated:

  kind `scored`       the prediction-log line of a scored event (PredictionRecord JSON);
  kind `outcome`      a call outcome (CallOutcome JSON);
  kind `do_not_call`  a do-not-call entry (DoNotCallEntry JSON), or no value: the entry lifted;
  kind `claim`        an agent's claim on the open task (Claim JSON), from `callscore api`.

The kind travels in the `kind` header; the key is the prospect id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiokafka.partitioner import murmur2

from core.topic_writer import Outgoing
from schemas import CallOutcome, Claim, DoNotCallEntry, PredictionRecord

InputKind = Literal["scored", "outcome", "do_not_call", "claim"]
INPUT_KINDS: tuple[InputKind, ...] = ("scored", "outcome", "do_not_call", "claim")
KIND_HEADER = "kind"


def partition_for(prospect_id: str, partitions: int) -> int:
    """The partition of a prospect's queue, for every topic of the queue (inputs, queue, state):
    Kafka's default partitioner for the key (murmur2 of its UTF-8 bytes, positive, modulo)."""
    return (murmur2(prospect_id.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class QueueInput:
    """One decoded record of the input topic."""

    kind: InputKind
    prospect_id: str
    partition: int
    offset: int
    value: bytes | None  # as received: a scored input's value is written to the log as it is
    prediction: PredictionRecord | None = None
    outcome: CallOutcome | None = None
    entry: DoNotCallEntry | None = None  # None with kind do_not_call: the entry is lifted
    claim: Claim | None = None


class InvalidInput(ValueError):
    """A record of the input topic that no scorer wrote (wrong kind, key or value)."""


def decode_input(
    key: bytes | None, value: bytes | None, kind: bytes | None, partition: int, offset: int
) -> QueueInput:
    if key is None:
        raise InvalidInput("no key: inputs are keyed by prospect_id")
    prospect_id = key.decode(errors="replace")
    name = (kind or b"").decode(errors="replace")
    if name == "scored":
        prediction = PredictionRecord.model_validate_json(value or b"")
        _same_prospect(prospect_id, prediction.prospect_id)
        return QueueInput("scored", prospect_id, partition, offset, value, prediction=prediction)
    if name == "outcome":
        outcome = CallOutcome.model_validate_json(value or b"")
        _same_prospect(prospect_id, outcome.prospect_id)
        return QueueInput("outcome", prospect_id, partition, offset, value, outcome=outcome)
    if name == "do_not_call":
        entry = None if value is None else DoNotCallEntry.model_validate_json(value)
        if entry is not None:
            _same_prospect(prospect_id, entry.prospect_id)
        return QueueInput("do_not_call", prospect_id, partition, offset, value, entry=entry)
    if name == "claim":
        claim = Claim.model_validate_json(value or b"")
        _same_prospect(prospect_id, claim.prospect_id)
        return QueueInput("claim", prospect_id, partition, offset, value, claim=claim)
    raise InvalidInput(f"unknown kind {name!r}: one of {', '.join(INPUT_KINDS)}")


def _same_prospect(key: str, field: str) -> None:
    if key != field:
        raise InvalidInput(f"key {key!r} is not the record's prospect_id {field!r}")


def input_record(
    topic: str, kind: InputKind, prospect_id: str, value: bytes | None, partitions: int
) -> Outgoing:
    """An input for `prospect_id`'s queue partition."""
    return Outgoing(
        topic,
        prospect_id.encode(),
        value,
        [(KIND_HEADER, kind.encode())],
        partition=partition_for(prospect_id, partitions),
    )
