"""What a replay is made of: scheduled records, and what they amount to per month."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Literal

from core.settings import Settings

RecordKind = Literal["event", "outcome", "do_not_call"]

# Sub-order of records published at the same instant for the same row: the event, then any
# malformed event placed next to it, then (delay 0) its outcome, then a malformed outcome; a
# late copy of the event and the prospect's do-not-call records after those.
GOOD_EVENT, BAD_EVENT, GOOD_OUTCOME, BAD_OUTCOME, LATE_EVENT, DO_NOT_CALL = range(6)


@dataclass(frozen=True)
class CallRef:
    """The call an outcome of the replay with attempts reports (simulator.attempts): what the
    replay waits for the call queue to have decided before it publishes the outcome
    (simulator.hold)."""

    attempt: int  # the event's `campaign` at the call: 1 for the row's own event
    event_id: str  # the event it calls: the row's, or the queue's retry of the previous call
    task_id: str
    retry_of: str | None = None  # the previous call's task, which the queue retries; None first
    retried_event_id: str | None = None  # that previous call's event


@dataclass(frozen=True)
class ScheduledRecord:
    """One record of the replay: what, where (`topic(settings)`) and when (event time `at`)."""

    at: datetime
    order: tuple[int, int]  # tie-break at equal `at`: (rank of the row, sub-order)
    kind: RecordKind
    key: bytes
    value: bytes | None  # None only for a do-not-call tombstone (the entry lifted)
    record_id: str  # the event id it carries (or refers to), the malformed record's own id, or
    # the prospect id of a do-not-call record
    row: int | None  # the row of the file; None for a malformed extra
    malformed: str | None = None  # the rule it breaks (BAD_*_KINDS); None when valid
    late: bool = False  # a late copy of its row's event (own event id, dated before the row's)
    final: bool = True  # an outcome of the row's last call (the others reached no decision)
    # The call a valid outcome reports, in the replay with attempts; None otherwise (one call
    # per row, and every other record): the replay holds only those (simulator.hold).
    call: CallRef | None = None

    @property
    def period(self) -> str:
        """The month ('YYYY-MM') in which it is published, in event time."""
        return f"{self.at.year:04d}-{self.at.month:02d}"

    def topic(self, settings: Settings) -> str:
        if self.kind == "event":
            return settings.topic_prospects
        if self.kind == "outcome":
            return settings.topic_outcomes
        return settings.topic_do_not_call


def sort_key(record: ScheduledRecord) -> tuple[datetime, tuple[int, int]]:
    return record.at, record.order


@dataclass
class MonthCounts:
    events: int = 0  # the rows' own events
    late_events: int = 0  # late copies (valid events too: each is scored or suppressed)
    outcomes: int = 0
    no_decision: int = 0  # of the outcomes: calls before the row's last (simulator.attempts)
    bad_events: int = 0
    bad_outcomes: int = 0
    do_not_call: int = 0  # do-not-call entries
    lifted: int = 0  # do-not-call tombstones

    def add(self, record: ScheduledRecord) -> None:
        if record.kind == "do_not_call":
            if record.value is None:
                self.lifted += 1
            else:
                self.do_not_call += 1
        elif record.kind == "event":
            if record.malformed is not None:
                self.bad_events += 1
            elif record.late:
                self.late_events += 1
            else:
                self.events += 1
        elif record.malformed is None:
            self.outcomes += 1
            self.no_decision += not record.final
        else:
            self.bad_outcomes += 1

    @property
    def prospect_records(self) -> int:
        """Records on the prospects topic: each is scored or dead-lettered."""
        return self.events + self.late_events + self.bad_events

    @property
    def valid_events(self) -> int:
        return self.events + self.late_events

    def __iadd__(self, other: MonthCounts) -> MonthCounts:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


def count_plan(plan: list[ScheduledRecord]) -> dict[str, MonthCounts]:
    """What a plan publishes per month (event time of publication)."""
    months: dict[str, MonthCounts] = {}
    for record in plan:
        months.setdefault(record.period, MonthCounts()).add(record)
    return months
