"""Outcomes and do-not-call records, routed to their prospect's queue partition (no Faust here).

Dialers key outcomes by prospect, and whoever maintains the do-not-call list keys its records by
prospect too, but with their own partitioners, so neither topic is co-partitioned with the
queue. The scorer's routing agents (streamer/app.py) read both topics, validate each record and
write it again to the queue's input topic at `callqueue.inputs.partition_for(prospect_id)`.

- An invalid outcome is not routed and is counted (`invalid`): the monitor reads the same topic
  and dead-letters it (call-outcomes.dead-letters), so it is never lost, and never a label.
- A `do_not_call` outcome also becomes a do-not-call entry (source `call-outcome`) on the
  compacted do-not-call topic: the queue suppresses the prospect at once on the outcome, and the
  entry keeps the objection for every later event and every replica, until it is lifted.
- An invalid do-not-call record becomes a dead letter on the prospects' dead-letter topic (the
  monitor does not read that topic, so nobody else would report it).

Accounting, checked whenever a RouteResult is built: consumed = routed + invalid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from callqueue.inputs import input_record
from core.dead_letters import dead_letter_for, dead_letter_record
from core.settings import Settings
from core.topic_writer import Outgoing
from schemas import CallOutcome, DeadLetter, DoNotCallEntry, decode_outcome
from schemas.decode import InvalidEvent, decode_do_not_call
from streamer.scoring import Incoming

# The `source` of a do-not-call entry made by a call's `do_not_call` disposition.
OUTCOME_SOURCE = "call-outcome"


class RouteAccountingError(RuntimeError):
    """A routing result that would lose records; never published."""


@dataclass(frozen=True)
class RouteResult:
    consumed: int
    routed: list[Outgoing]
    invalid: int
    dead_letters: list[DeadLetter]
    outgoing: list[Outgoing]

    def __post_init__(self) -> None:
        if self.consumed != len(self.routed) + self.invalid:
            raise RouteAccountingError(
                f"consumed {self.consumed} != routed {len(self.routed)} + invalid {self.invalid}"
            )


def route_outcomes(records: Sequence[Incoming], settings: Settings) -> RouteResult:
    """Each valid outcome to its prospect's queue partition; a `do_not_call` one also becomes
    the prospect's entry on the do-not-call topic, where the objection stands until lifted."""
    routed = []
    objections = []
    for record in records:
        try:
            outcome = decode_outcome(record.value, settings.max_message_bytes)
        except InvalidEvent:
            continue
        routed.append(
            input_record(
                settings.topic_queue_inputs,
                "outcome",
                outcome.prospect_id,
                record.value,
                settings.partitions,
            )
        )
        if outcome.disposition == "do_not_call":
            objections.append(objection_record(settings.topic_do_not_call, outcome))
    invalid = len(records) - len(routed)
    return RouteResult(len(records), routed, invalid, [], [*routed, *objections])


def objection_record(topic: str, outcome: CallOutcome) -> Outgoing:
    entry = DoNotCallEntry(
        prospect_id=outcome.prospect_id, requested_at=outcome.called_at, source=OUTCOME_SOURCE
    )
    return Outgoing(topic, outcome.prospect_id.encode(), entry.model_dump_json().encode())


def route_do_not_call(
    records: Sequence[Incoming], settings: Settings, now: datetime
) -> RouteResult:
    routed: list[Outgoing] = []
    letters: list[DeadLetter] = []
    for record in records:
        try:
            entry = decode_do_not_call(record.key, record.value, settings.max_message_bytes)
        except InvalidEvent as exc:
            letters.append(dead_letter_for(record, exc, settings.max_message_bytes, now))
            continue
        key = (record.key or b"").decode(errors="replace")
        prospect_id = entry.prospect_id if entry is not None else key
        routed.append(
            input_record(
                settings.topic_queue_inputs,
                "do_not_call",
                prospect_id,
                record.value,
                settings.partitions,
            )
        )
    outgoing = routed + [dead_letter_record(settings.topic_dead_letters, x) for x in letters]
    return RouteResult(len(records), routed, len(letters), letters, outgoing)
