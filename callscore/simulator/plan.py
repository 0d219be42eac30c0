"""The replay's plan, pure (no broker): every record to publish, in event-time order.

`plan_replay(frame, options)` turns bank-full.csv's rows into a `ProspectEvent` per row, its
`CallOutcome` after the outcome delay and optional malformed extras; `wall_offsets` maps their
event time to wall time for a speedup. `callscore.simulator.publish` sends a plan to Kafka.

Ids come from the row's position in the file (`uci-<row>`), so replaying twice yields the same
event ids and therefore the same task ids downstream. Post-call facts (`duration`, `y`) only ever
travel in outcomes.
"""

from __future__ import annotations

import calendar
import heapq
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from callscore.simulator.events import events_from_frame
from callscore.simulator.malformed import bad_records, compact_json
from callscore.simulator.records import (
    GOOD_EVENT,
    GOOD_OUTCOME,
    RecordKind,
    ScheduledRecord,
    sort_key,
)
from core.errors import CallscoreError
from schemas import task_id_for
from schemas.decode import InvalidEvent, decode_outcome, decode_prospect

# The file has dates but no times: calls of one day are spread evenly over office hours.
CALL_DAY_START = timedelta(hours=9)
CALL_DAY_LENGTH = timedelta(hours=9)

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class ReplayOptions:
    start: str | None = None  # first month 'YYYY-MM' (default: the file's first)
    months: int | None = None  # calendar months replayed (default: to the end)
    outcome_delay: timedelta = timedelta(days=2)
    bad_rate: float = 0.0  # malformed extras per good event (and per good outcome)
    seed: int = 0
    id_prefix: str = "uci"

    def __post_init__(self) -> None:
        if self.start is not None:
            parse_period(self.start)
        if self.months is not None and self.months < 1:
            raise CallscoreError(f"--months must be at least 1 (got {self.months})")
        if self.outcome_delay < timedelta(0):
            raise CallscoreError("--outcome-delay must not be negative")
        if not 0.0 <= self.bad_rate <= 1.0:
            raise CallscoreError(f"--bad-rate must be between 0 and 1 (got {self.bad_rate})")


def parse_period(text: str) -> tuple[int, int]:
    """A month 'YYYY-MM' as (year, month)."""
    match = _PERIOD.match(text)
    if match is None:
        raise CallscoreError(f"--from must be a month as YYYY-MM, e.g. 2009-01 (got {text!r})")
    return int(match.group(1)), int(match.group(2))


def _shift(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def select_months(frame: pd.DataFrame, options: ReplayOptions) -> pd.DataFrame:
    """Rows of the calendar months [start, start + months) (the frame's own order kept)."""
    if "period" not in frame.columns:
        raise CallscoreError(
            "the frame has no 'period' column: load it with trainer.data.load_bank "
            "(or add one with trainer.data.add_periods)"
        )
    if frame.empty:
        raise CallscoreError("no rows to replay: the data is empty")
    periods = frame["period"].astype(str)
    first, last = periods.min(), periods.max()
    start = options.start or first
    if not first <= start <= last:
        raise CallscoreError(f"--from {start} is outside the data, which covers {first} to {last}")
    selected = periods >= start
    if options.months is not None:
        end = "{:04d}-{:02d}".format(*_shift(*parse_period(start), options.months))
        selected &= periods < end
    rows = frame[selected]
    if rows.empty:
        raise CallscoreError(f"no rows in the {options.months} month(s) from {start}")
    return rows


def occurred_times(frame: pd.DataFrame) -> list[datetime]:
    """When each row's contact happened (UTC), reconstructed from its period and day.

    The day is clamped to the month's length; rows of one day are spread over office hours in
    the file's order, so the file's order within a day is kept.
    """
    year = frame["period"].str.slice(0, 4).astype(int).to_numpy()
    month = frame["period"].str.slice(5, 7).astype(int).to_numpy()
    length = np.array([calendar.monthrange(y, m)[1] for y, m in zip(year, month, strict=True)])
    day = np.minimum(frame["day"].to_numpy(dtype=np.int64), length)
    keys = pd.DataFrame({"y": year, "m": month, "d": day})
    position = keys.groupby(["y", "m", "d"]).cumcount().to_numpy()
    size = keys.groupby(["y", "m", "d"])["d"].transform("size").to_numpy()
    offset = CALL_DAY_START.total_seconds() + (
        position * int(CALL_DAY_LENGTH.total_seconds()) // size
    )
    return [
        datetime(int(y), int(m), int(d), tzinfo=UTC) + timedelta(seconds=int(s))
        for y, m, d, s in zip(year, month, day, offset, strict=True)
    ]


def _row_numbers(frame: pd.DataFrame) -> list[int]:
    if not pd.api.types.is_integer_dtype(frame.index) or not frame.index.is_unique:
        raise CallscoreError(
            "the frame's index must be the rows' positions in the file (as load_bank returns)"
        )
    return [int(i) for i in frame.index]


@dataclass(frozen=True)
class _Row:
    """One replayed row: its number in the file, ids, contact time, event and outcome facts."""

    number: int
    event_id: str
    prospect_id: str
    at: datetime
    event: dict[str, Any]
    subscribed: bool
    duration: int


def _rows(rows: pd.DataFrame, prefix: str) -> list[_Row]:
    """The rows in the order their contacts happened (ties: the file's order)."""
    numbers = _row_numbers(rows)
    times = occurred_times(rows)
    event_ids = [f"{prefix}-{n}" for n in numbers]
    prospect_ids = [f"{prefix}-prospect-{n}" for n in numbers]
    events = events_from_frame(
        rows, prefix, event_ids=event_ids, prospect_ids=prospect_ids, occurred_at=times
    )
    subscribed = (rows["y"] == "yes").to_list()
    durations = rows["duration"].astype(int).to_list()
    ranked = sorted(range(len(rows)), key=lambda i: (times[i], numbers[i]))
    return [
        _Row(
            number=numbers[i],
            event_id=event_ids[i],
            prospect_id=prospect_ids[i],
            at=times[i],
            event=events[i],
            subscribed=bool(subscribed[i]),
            duration=durations[i],
        )
        for i in ranked
    ]


def _outcome(row: _Row, delay: timedelta) -> dict[str, Any]:
    return {
        "event_id": row.event_id,
        "task_id": task_id_for(row.event_id),
        "prospect_id": row.prospect_id,
        "called_at": (row.at + delay).isoformat(),
        "subscribed": row.subscribed,
        "duration_seconds": row.duration,
    }


def _good(
    row: _Row, at: datetime, order: tuple[int, int], kind: RecordKind, value: bytes
) -> ScheduledRecord:
    key = row.prospect_id.encode()
    return ScheduledRecord(at, order, kind, key, value, record_id=row.event_id, row=row.number)


def _good_records(
    rows: list[_Row], delay: timedelta
) -> tuple[list[ScheduledRecord], list[ScheduledRecord]]:
    """The valid events and outcomes, each in event-time order (rank = position in `rows`)."""
    events: list[ScheduledRecord] = []
    outcomes: list[ScheduledRecord] = []
    for rank, row in enumerate(rows):
        value = compact_json(row.event)
        outcome = compact_json(_outcome(row, delay))
        # A row the contracts reject is a data problem: say which row, never publish it as good.
        try:
            decode_prospect(value)
            decode_outcome(outcome)
        except InvalidEvent as exc:
            raise CallscoreError(f"row {row.number} cannot be replayed: {exc.message}") from None
        events.append(_good(row, row.at, (rank, GOOD_EVENT), "event", value))
        outcomes.append(_good(row, row.at + delay, (rank, GOOD_OUTCOME), "outcome", outcome))
    return events, outcomes


def plan_replay(frame: pd.DataFrame, options: ReplayOptions) -> list[ScheduledRecord]:
    """Every record of the replay, in the order (and at the event time) it is published."""
    rows = _rows(select_months(frame, options), options.id_prefix)
    events, outcomes = _good_records(rows, options.outcome_delay)
    by_rank = [row.event for row in rows]
    rng = np.random.default_rng(options.seed)
    extras = (options.bad_rate, options.id_prefix, rng)
    bad_events = bad_records("event", events, by_rank, *extras)
    bad_outcomes = bad_records("outcome", outcomes, by_rank, *extras)
    # Each stream is already in order; one heap merge interleaves outcomes with later events.
    streams: list[Iterator[ScheduledRecord]] = [
        heapq.merge(events, bad_events, key=sort_key),
        heapq.merge(outcomes, bad_outcomes, key=sort_key),
    ]
    return list(heapq.merge(*streams, key=sort_key))


def wall_offsets(plan: list[ScheduledRecord], speedup: float) -> list[float]:
    """Seconds after the start at which each record is due (all 0 when speedup is inf)."""
    if not plan or math.isinf(speedup):
        return [0.0] * len(plan)
    origin = plan[0].at
    return [(record.at - origin).total_seconds() / speedup for record in plan]
