"""What a replay is made of: scheduled records, and what they amount to per month."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from core.settings import Settings

RecordKind = Literal["event", "outcome"]

# Sub-order of records published at the same instant for the same row: the event, then any
# malformed event placed next to it, then (delay 0) its outcome, then a malformed outcome.
GOOD_EVENT, BAD_EVENT, GOOD_OUTCOME, BAD_OUTCOME = range(4)


@dataclass(frozen=True)
class ScheduledRecord:
    """One record of the replay: what, where (`topic(settings)`) and when (event time `at`)."""

    at: datetime
    order: tuple[int, int]  # tie-break at equal `at`: (rank of the row, sub-order)
    kind: RecordKind
    key: bytes
    value: bytes
    record_id: str  # the event id it carries (or refers to), or the malformed record's own id
    row: int | None  # the row of the file; None for a malformed extra
    malformed: str | None = None  # the rule it breaks (BAD_*_KINDS); None when valid

    @property
    def period(self) -> str:
        """The month ('YYYY-MM') in which it is published, in event time."""
        return f"{self.at.year:04d}-{self.at.month:02d}"

    def topic(self, settings: Settings) -> str:
        return settings.topic_prospects if self.kind == "event" else settings.topic_outcomes


def sort_key(record: ScheduledRecord) -> tuple[datetime, tuple[int, int]]:
    return record.at, record.order


@dataclass
class MonthCounts:
    events: int = 0
    outcomes: int = 0
    bad_events: int = 0
    bad_outcomes: int = 0

    def add(self, record: ScheduledRecord) -> None:
        if record.kind == "event":
            if record.malformed is None:
                self.events += 1
            else:
                self.bad_events += 1
        elif record.malformed is None:
            self.outcomes += 1
        else:
            self.bad_outcomes += 1

    def __iadd__(self, other: MonthCounts) -> MonthCounts:
        self.events += other.events
        self.outcomes += other.outcomes
        self.bad_events += other.bad_events
        self.bad_outcomes += other.bad_outcomes
        return self


def count_plan(plan: list[ScheduledRecord]) -> dict[str, MonthCounts]:
    """What a plan publishes per month (event time of publication)."""
    months: dict[str, MonthCounts] = {}
    for record in plan:
        months.setdefault(record.period, MonthCounts()).add(record)
    return months
