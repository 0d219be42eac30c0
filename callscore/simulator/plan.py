"""The replay's plan, pure (no broker): every record to publish, in event-time order.

`plan_replay(frame, options)` turns bank-full.csv's rows into a `ProspectEvent` per row, its
`CallOutcome` after the outcome delay and optional malformed extras; `wall_offsets` maps their
event time to wall time for a speedup. `callscore.simulator.publish` sends a plan to Kafka.

So that every rule of the call queue (docs/architecture.md, "The call queue") fires on the real
data, prospects get more than one event and some object to calls, each a share of the rows
(`ReplayOptions`; the defaults make every rule fire in `callscore demo`):

- repeated prospects (`repeat_rate`): the file has no customer id, so a share of rows become a
  later contact of an earlier row's prospect, a deterministic mapping of the whole file
  (`simulator.prospects`): a later contact supersedes the open task, cools down after a call, or
  queues again;
- late events (`late_rate`): a share of events sent again, dated before the prospect's newest
  event (`simulator.late_events`): scored and logged, no task;
- do-not-call entries (`do_not_call_rate`, `lift_rate`): a share of prospects object some time
  after their first event, a few withdraw the objection later (`simulator.do_not_call`);
- slow calls (`slow_call_rate`, `slow_call_delay`): a share of outcomes come after
  `slow_call_delay` (21 days, beyond the scorer's default CALLSCORE_TASK_TTL_DAYS of 14): their
  tasks expire first, and the late outcome is stale.

Ids come from the row's position in the file (`uci-<row>`, a late copy `uci-<row>-late`), so
replaying twice yields the same event ids and therefore the same task ids downstream; the seed
draws the malformed extras, the late copies, the objections and the slow calls (same seed, same
plan), never the prospects. Post-call facts (`duration`, `y`) only ever travel in outcomes.
"""

from __future__ import annotations

import calendar
import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from callscore.simulator.attempts import Attempt, row_attempts
from callscore.simulator.do_not_call import do_not_call_records
from callscore.simulator.events import events_from_frame
from callscore.simulator.late_events import late_events
from callscore.simulator.malformed import bad_records, compact_json
from callscore.simulator.options import ReplayOptions, parse_period
from callscore.simulator.prospects import prospect_rows
from callscore.simulator.records import (
    GOOD_EVENT,
    GOOD_OUTCOME,
    CallRef,
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
    lengths = {(y, m): calendar.monthrange(y, m)[1] for y, m in set(zip(year, month, strict=True))}
    length = np.array([lengths[y, m] for y, m in zip(year, month, strict=True)])
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
    event: dict[str, Any]  # attempt 1's, when the replay has attempts
    campaign: int  # the row's own
    subscribed: bool
    duration: int


def _rows(frame: pd.DataFrame, rows: pd.DataFrame, options: ReplayOptions) -> list[_Row]:
    """The selected rows in the order their contacts happened (ties: the file's order), each
    with its prospect (mapped over the whole `frame`, so that it does not depend on the window)."""
    prefix = options.id_prefix
    every_number = _row_numbers(frame)
    every_time = occurred_times(frame)
    owners = prospect_rows(every_number, every_time, options.repeat_rate)
    numbers = _row_numbers(rows)
    # The replay holds whole months, whose times are those of the whole frame.
    time_of = dict(zip(every_number, every_time, strict=True))
    times = [time_of[n] for n in numbers]
    event_ids = [f"{prefix}-{n}" for n in numbers]
    prospect_ids = [f"{prefix}-prospect-{owners[n]}" for n in numbers]
    events = events_from_frame(
        rows, prefix, event_ids=event_ids, prospect_ids=prospect_ids, occurred_at=times
    )
    campaigns = [int(event["campaign"]) for event in events]
    if options.attempts is not None:  # the first of the row's contacts
        events = [{**event, "campaign": 1} for event in events]
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
            campaign=campaigns[i],
            subscribed=bool(subscribed[i]),
            duration=durations[i],
        )
        for i in ranked
    ]


def _calls(
    row: _Row, delay: timedelta, options: ReplayOptions, rng: np.random.Generator
) -> list[Attempt]:
    """The row's calls: one, or its contacts (`ReplayOptions.attempts`, simulator.attempts)."""
    first_call = row.at + delay
    if options.attempts is None:
        return [
            Attempt(
                row.event["campaign"],
                row.event_id,
                task_id_for(row.event_id),
                first_call,
                "reached",
            )
        ]
    return row_attempts(row.event_id, row.campaign, first_call, options.attempts, rng)


def _outcome(row: _Row, call: Attempt) -> dict[str, Any]:
    outcome: dict[str, Any] = {
        "event_id": call.event_id,
        "task_id": call.task_id,
        "prospect_id": row.prospect_id,
        "called_at": call.called_at.isoformat(),
        "disposition": call.disposition,
    }
    if call.last:
        outcome |= {"subscribed": row.subscribed, "duration_seconds": row.duration}
    if call.callback_at is not None:
        outcome["callback_at"] = call.callback_at.isoformat()
    return outcome


def _good(
    row: _Row, at: datetime, order: tuple[int, int], kind: RecordKind, value: bytes
) -> ScheduledRecord:
    key = row.prospect_id.encode()
    return ScheduledRecord(at, order, kind, key, value, record_id=row.event_id, row=row.number)


def _good_records(
    rows: list[_Row], delays: list[timedelta], options: ReplayOptions, rng: np.random.Generator
) -> tuple[list[ScheduledRecord], list[ScheduledRecord]]:
    """The valid events and outcomes, each in event-time order (rank = position in `rows`); the
    first call of `rows[rank]` comes `delays[rank]` after its event."""
    events: list[ScheduledRecord] = []
    outcomes: list[ScheduledRecord] = []
    for rank, (row, delay) in enumerate(zip(rows, delays, strict=True)):
        value = compact_json(row.event)
        calls = [
            (call, compact_json(_outcome(row, call))) for call in _calls(row, delay, options, rng)
        ]
        # A row the contracts reject is a data problem: say which row, never publish it as good.
        try:
            decode_prospect(value)
            for _call, outcome in calls:
                decode_outcome(outcome)
        except InvalidEvent as exc:
            raise CallscoreError(f"row {row.number} cannot be replayed: {exc.message}") from None
        events.append(_good(row, row.at, (rank, GOOD_EVENT), "event", value))
        previous: Attempt | None = None
        for call, outcome in calls:
            record = _good(row, call.called_at, (rank, GOOD_OUTCOME), "outcome", outcome)
            ref = None
            if options.attempts is not None:  # what the replay holds the outcome for
                ref = CallRef(
                    call.number,
                    call.event_id,
                    call.task_id,
                    retry_of=previous.task_id if previous else None,
                    retried_event_id=previous.event_id if previous else None,
                )
            outcomes.append(replace(record, final=call.last, call=ref))
            previous = call
    # Slow calls come later than the rest: the outcomes are in event-time order again.
    return events, sorted(outcomes, key=sort_key)


def _delays(count: int, options: ReplayOptions, rng: np.random.Generator) -> list[timedelta]:
    """Each row's outcome delay: `slow_call_delay` for round(slow_call_rate x rows) of them."""
    delays = [options.outcome_delay] * count
    slow = rng.choice(count, size=round(options.slow_call_rate * count), replace=False)
    for rank in slow:
        delays[int(rank)] = options.slow_call_delay
    return delays


# The generators of the extras, one stream each, so that one option's share does not change
# another's draws (the malformed extras keep the seed's own generator).
_LATE, _DO_NOT_CALL, _SLOW, _ATTEMPTS = 1, 2, 3, 4


def plan_replay(frame: pd.DataFrame, options: ReplayOptions) -> list[ScheduledRecord]:
    """Every record of the replay, in the order (and at the event time) it is published."""
    rows = _rows(frame, select_months(frame, options), options)
    seed = options.seed
    delays = _delays(len(rows), options, np.random.default_rng([seed, _SLOW]))
    events, outcomes = _good_records(
        rows, delays, options, np.random.default_rng([seed, _ATTEMPTS])
    )
    by_rank = [row.event for row in rows]
    rng = np.random.default_rng(seed)
    extras = (options.bad_rate, options.id_prefix, rng)
    bad_events = bad_records("event", events, by_rank, *extras)
    bad_outcomes = bad_records("outcome", outcomes, by_rank, *extras)
    late = late_events(events, by_rank, options.late_rate, np.random.default_rng([seed, _LATE]))
    objections = do_not_call_records(
        events,
        options.do_not_call_rate,
        options.lift_rate,
        np.random.default_rng([seed, _DO_NOT_CALL]),
    )
    # Each stream is already in order; one heap merge interleaves them.
    streams: list[Iterator[ScheduledRecord]] = [
        heapq.merge(events, bad_events, key=sort_key),
        heapq.merge(outcomes, bad_outcomes, key=sort_key),
        iter(late),
        iter(objections),
    ]
    return list(heapq.merge(*streams, key=sort_key))


def wall_offsets(plan: list[ScheduledRecord], speedup: float) -> list[float]:
    """Seconds after the start at which each record is due (all 0 when speedup is inf)."""
    if not plan or math.isinf(speedup):
        return [0.0] * len(plan)
    origin = plan[0].at
    return [(record.at - origin).total_seconds() / speedup for record in plan]
