"""Replay bank-full.csv as the live system would see it: prospect events, then their outcomes.

Two steps, so the benchmark and the tests can use the first without a broker:

* `plan_replay(frame, options)` is pure: every record to publish (a `ProspectEvent` per row, its
  `CallOutcome` after the outcome delay, and optional malformed extras), in event-time order.
* `run_replay(settings, plan, speedup)` publishes that plan with one producer, mapping event time
  to wall time, and returns what it published per month.

Ids come from the row's position in the file (`uci-<row>`), so replaying twice yields the same
event ids and therefore the same task ids downstream. Post-call facts (`duration`, `y`) only ever
travel in outcomes.
"""

from __future__ import annotations

import calendar
import heapq
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from callscore.simulator.events import events_from_frame
from core.errors import BrokerUnavailableError, CallscoreError
from core.kafka import ensure_topics, producer_config
from core.settings import Settings
from schemas import task_id_for
from schemas.decode import InvalidEvent, decode_outcome, decode_prospect
from trainer.data import load_bank, resolve_data_path

RecordKind = Literal["event", "outcome"]

# Malformed extras, one per rule the contracts enforce (each is rejected by the decoders).
BAD_EVENT_KINDS: tuple[str, ...] = (
    "not_json",
    "not_object",
    "wrong_type",
    "out_of_range",
    "unknown_category",
    "post_call_field",
    "empty",
)
BAD_OUTCOME_KINDS: tuple[str, ...] = (
    "not_json",
    "not_object",
    "wrong_type",
    "out_of_range",
    "missing_reference",
    "empty",
)

# The file has dates but no times: calls of one day are spread evenly over office hours.
CALL_DAY_START = timedelta(hours=9)
CALL_DAY_LENGTH = timedelta(hours=9)
# How long the last records may take to be acknowledged once everything is produced.
FLUSH_TIMEOUT_SECONDS = 60.0

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)([dhms])$")
_DELAY_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
# Sub-order of records published at the same instant for the same row: the event, then any
# malformed event placed next to it, then (delay 0) its outcome, then a malformed outcome.
_GOOD_EVENT, _BAD_EVENT, _GOOD_OUTCOME, _BAD_OUTCOME = range(4)


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


@dataclass
class ReplaySummary:
    months: dict[str, MonthCounts] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def total(self) -> MonthCounts:
        total = MonthCounts()
        for counts in self.months.values():
            total.events += counts.events
            total.outcomes += counts.outcomes
            total.bad_events += counts.bad_events
            total.bad_outcomes += counts.bad_outcomes
        return total


def count_plan(plan: list[ScheduledRecord]) -> dict[str, MonthCounts]:
    """What a plan publishes per month (event time of publication)."""
    months: dict[str, MonthCounts] = {}
    for record in plan:
        months.setdefault(record.period, MonthCounts()).add(record)
    return months


# --- parsing the command's options --------------------------------------------------------------


def parse_period(text: str) -> tuple[int, int]:
    match = _PERIOD.match(text)
    if match is None:
        raise CallscoreError(f"--from must be a month as YYYY-MM, e.g. 2009-01 (got {text!r})")
    return int(match.group(1)), int(match.group(2))


def parse_delay(text: str) -> timedelta:
    """'2d', '12h', '30m', '45s' or '0' (event time)."""
    text = text.strip().lower()
    if text in ("0", "0.0"):
        return timedelta(0)
    match = _DELAY.match(text)
    if match is None:
        raise CallscoreError(
            f"--outcome-delay must be a number with a unit d, h, m or s (e.g. 2d, 12h, 30m), "
            f"or 0 (got {text!r})"
        )
    return timedelta(seconds=float(match.group(1)) * _DELAY_UNITS[match.group(2)])


def parse_speedup(text: str) -> float:
    """Event-time seconds per wall second; '0' and 'inf' mean as fast as possible (inf)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise CallscoreError(
            f"--speedup must be a number of event-time seconds per wall second (0 or inf: "
            f"as fast as possible), e.g. 259200 for a month in 10 s (got {text!r})"
        )
    return math.inf if value == 0 else value


def load_rows(data: Path | None, settings: Settings) -> tuple[pd.DataFrame, Path]:
    """The bank-full rows to replay (--data, else where the trainer finds its data)."""
    path = resolve_data_path(data, settings)
    frame, _sha = load_bank(path)
    return frame, path


# --- the plan ------------------------------------------------------------------------------------


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


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _row_numbers(frame: pd.DataFrame) -> list[int]:
    if not pd.api.types.is_integer_dtype(frame.index) or not frame.index.is_unique:
        raise CallscoreError(
            "the frame's index must be the rows' positions in the file (as load_bank returns)"
        )
    return [int(i) for i in frame.index]


def _good_records(
    rows: pd.DataFrame, options: ReplayOptions
) -> tuple[list[ScheduledRecord], list[ScheduledRecord], list[dict[str, Any]]]:
    """The valid events and outcomes, each in event-time order, and the event dicts by rank."""
    numbers = _row_numbers(rows)
    times = occurred_times(rows)
    ranked = sorted(range(len(rows)), key=lambda i: (times[i], numbers[i]))
    prefix = options.id_prefix
    event_ids = [f"{prefix}-{numbers[i]}" for i in range(len(rows))]
    prospect_ids = [f"{prefix}-prospect-{numbers[i]}" for i in range(len(rows))]
    dicts = events_from_frame(
        rows, prefix, event_ids=event_ids, prospect_ids=prospect_ids, occurred_at=times
    )
    subscribed = (rows["y"] == "yes").to_list()
    durations = rows["duration"].astype(int).to_list()
    events: list[ScheduledRecord] = []
    outcomes: list[ScheduledRecord] = []
    by_rank: list[dict[str, Any]] = []
    for rank, i in enumerate(ranked):
        event_id, key = event_ids[i], prospect_ids[i].encode()
        value = _json(dicts[i])
        outcome = {
            "event_id": event_id,
            "task_id": task_id_for(event_id),
            "prospect_id": prospect_ids[i],
            "called_at": (times[i] + options.outcome_delay).isoformat(),
            "subscribed": bool(subscribed[i]),
            "duration_seconds": durations[i],
        }
        outcome_value = _json(outcome)
        # A row the contracts reject is a data problem: say which row, never publish it as good.
        try:
            decode_prospect(value)
            decode_outcome(outcome_value)
        except InvalidEvent as exc:
            raise CallscoreError(f"row {numbers[i]} cannot be replayed: {exc.message}") from None
        events.append(
            ScheduledRecord(
                times[i], (rank, _GOOD_EVENT), "event", key, value, event_id, numbers[i]
            )
        )
        outcomes.append(
            ScheduledRecord(
                times[i] + options.outcome_delay,
                (rank, _GOOD_OUTCOME),
                "outcome",
                key,
                outcome_value,
                event_id,
                numbers[i],
            )
        )
        by_rank.append(dicts[i])
    return events, outcomes, by_rank


def _bad_event(kind: str, event: dict[str, Any], bad_id: str, rng: np.random.Generator) -> bytes:
    body = {**event, "event_id": bad_id, "prospect_id": bad_id}
    if kind == "not_json":
        text = json.dumps(body)
        return text[: len(text) // 2].encode()
    if kind == "not_object":
        return _json([body])
    if kind == "wrong_type":
        return _json({**body, "age": str(body["age"])})
    if kind == "out_of_range":
        return _json({**body, "age": 150})
    if kind == "unknown_category":
        return _json({**body, "job": "astronaut"})
    if kind == "post_call_field":
        # A made-up call length, not the row's: even a rejected event must not carry a label.
        return _json({**body, "duration": int(rng.integers(1, 1000))})
    assert kind == "empty", kind
    return b""


def _bad_outcome(kind: str, outcome: dict[str, Any], bad_id: str) -> bytes:
    body = {k: v for k, v in outcome.items() if k != "task_id"} | {"event_id": bad_id}
    if kind == "not_json":
        text = json.dumps(body)
        return text[: len(text) // 2].encode()
    if kind == "not_object":
        return _json([body])
    if kind == "wrong_type":
        return _json({**body, "subscribed": "yes"})
    if kind == "out_of_range":
        return _json({**body, "duration_seconds": -1})
    if kind == "missing_reference":
        return _json({k: v for k, v in body.items() if k != "event_id"})
    assert kind == "empty", kind
    return b""


def _bad_records(
    kind: RecordKind,
    good: list[ScheduledRecord],
    by_rank: list[dict[str, Any]],
    options: ReplayOptions,
    rng: np.random.Generator,
) -> list[ScheduledRecord]:
    """round(bad_rate x good) malformed extras, each published right after a good record."""
    count = round(options.bad_rate * len(good))
    if count == 0:
        return []
    kinds = BAD_EVENT_KINDS if kind == "event" else BAD_OUTCOME_KINDS
    anchors = np.sort(rng.choice(len(good), size=count, replace=False))
    # Every rule appears once the count allows it; which record gets which is random.
    rules = [kinds[j % len(kinds)] for j in range(count)]
    rng.shuffle(rules)
    bad = []
    for n, (anchor, rule) in enumerate(zip(anchors, rules, strict=True)):
        near = good[int(anchor)]
        bad_id = f"{options.id_prefix}-bad-{kind}-{n}"
        if kind == "event":
            value = _bad_event(rule, by_rank[near.order[0]], bad_id, rng)
            sub = _BAD_EVENT
        else:
            value = _bad_outcome(rule, json.loads(near.value), bad_id)
            sub = _BAD_OUTCOME
        bad.append(
            ScheduledRecord(
                near.at, (near.order[0], sub), kind, bad_id.encode(), value, bad_id, None, rule
            )
        )
    return bad


def _sort_key(record: ScheduledRecord) -> tuple[datetime, tuple[int, int]]:
    return record.at, record.order


def plan_replay(frame: pd.DataFrame, options: ReplayOptions) -> list[ScheduledRecord]:
    """Every record of the replay, in the order (and at the event time) it is published."""
    rows = select_months(frame, options)
    events, outcomes, by_rank = _good_records(rows, options)
    rng = np.random.default_rng(options.seed)
    bad_events = _bad_records("event", events, by_rank, options, rng)
    bad_outcomes = _bad_records("outcome", outcomes, by_rank, options, rng)
    # Each stream is already in order; one heap merge interleaves outcomes with later events.
    streams: list[Iterator[ScheduledRecord]] = [
        heapq.merge(events, bad_events, key=_sort_key),
        heapq.merge(outcomes, bad_outcomes, key=_sort_key),
    ]
    return list(heapq.merge(*streams, key=_sort_key))


# --- publishing ----------------------------------------------------------------------------------


def wall_offsets(plan: list[ScheduledRecord], speedup: float) -> list[float]:
    """Seconds after the start at which each record is due (all 0 when speedup is inf)."""
    if not plan or math.isinf(speedup):
        return [0.0] * len(plan)
    origin = plan[0].at
    return [(record.at - origin).total_seconds() / speedup for record in plan]


def run_replay(
    settings: Settings,
    plan: list[ScheduledRecord],
    speedup: float,
    on_month: Callable[[str, MonthCounts, float], None] | None = None,
) -> ReplaySummary:
    """Publish the plan with one producer, each record when the wall clock reaches its mapped
    event time; `on_month(period, counts, wall_seconds)` after each month. Raises
    BrokerUnavailableError if a record is not acknowledged."""
    from confluent_kafka import KafkaException, Producer

    ensure_topics(settings)
    producer = Producer(producer_config(settings))
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    summary = ReplaySummary()
    offsets = wall_offsets(plan, speedup)
    started = time.monotonic()
    current: str | None = None
    try:
        for record, offset in zip(plan, offsets, strict=True):
            if record.period != current:
                if current is not None and on_month is not None:
                    on_month(current, summary.months[current], time.monotonic() - started)
                current = record.period
                summary.months[current] = MonthCounts()
            # poll() doubles as the wait, so delivery reports are served meanwhile.
            while (wait := started + offset - time.monotonic()) > 0:
                producer.poll(min(wait, 0.1))
            _produce(producer, record.topic(settings), record, delivered)
            summary.months[current].add(record)
            if failures:
                break
    except KafkaException as exc:
        raise BrokerUnavailableError(f"publishing the replay failed: {exc.args[0]}") from None
    finally:
        left = producer.flush(FLUSH_TIMEOUT_SECONDS)
    summary.wall_seconds = time.monotonic() - started
    if failures:
        raise BrokerUnavailableError(f"the broker refused a replayed record: {failures[0]}")
    if left:
        raise BrokerUnavailableError(
            f"{left} replayed record(s) not acknowledged by Kafka at {settings.bootstrap_servers} "
            f"within {FLUSH_TIMEOUT_SECONDS:.0f} s"
        )
    if current is not None and on_month is not None:
        on_month(current, summary.months[current], summary.wall_seconds)
    return summary


def _produce(producer: Any, topic: str, record: ScheduledRecord, delivered: Any) -> None:
    while True:
        try:
            producer.produce(topic, key=record.key, value=record.value, on_delivery=delivered)
            producer.poll(0)
            return
        except BufferError:
            # The local queue is full (as fast as possible): let the broker catch up.
            producer.poll(0.5)
