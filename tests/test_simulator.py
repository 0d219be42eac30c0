"""The replay simulator: the plan (pure, no broker), the extras that make every rule of the call
queue fire (repeated prospects, late events, do-not-call entries and lifts, slow calls: checked
by the queue's own pure rules, no broker), and one replay onto the real broker."""

from __future__ import annotations

import calendar
import heapq
import itertools
import json
import re
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from callqueue.inputs import QueueInput, partition_for
from callqueue.rules import (
    PartitionQueue,
    QueueCounts,
    QueuePolicy,
    QueueTopics,
    retry_event_id,
)
from callscore.cli import main
from callscore.commands.arguments import parse_delay, parse_speedup
from callscore.simulator.do_not_call import LIFT_AFTER, LIFT_WITHIN, OBJECTION_WITHIN
from callscore.simulator.hold import CallHold, Verdict
from callscore.simulator.late_events import LATE_BY
from callscore.simulator.malformed import BAD_EVENT_KINDS, BAD_OUTCOME_KINDS
from callscore.simulator.plan import ReplayOptions, occurred_times, plan_replay, wall_offsets
from callscore.simulator.prospects import REPEAT_WITHIN
from callscore.simulator.publish import ReplaySummary, pace, run_replay
from callscore.simulator.records import CallRef, MonthCounts, ScheduledRecord, count_plan
from core.errors import CallscoreError
from core.settings import Settings
from core.topic_reader import read_topics
from schemas import POST_CALL_FIELDS, WITHDRAWAL_HEADER, PredictionRecord, task_id_for
from schemas.decode import InvalidEvent, decode_do_not_call, decode_outcome, decode_prospect
from trainer.data import add_periods, load_bank
from trainer.synthetic import synthetic_bank_frame

# What each malformed extra is rejected as (schemas.dead_letter.ErrorKind).
DECODED_AS = {
    "not_json": "not_json",
    "not_object": "not_object",
    "wrong_type": "invalid_fields",
    "out_of_range": "invalid_fields",
    "unknown_category": "invalid_fields",
    "missing_reference": "invalid_fields",
    "post_call_field": "post_call_field",
    "empty": "empty",
}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return add_periods(synthetic_bank_frame(rows=3000, seed=11))


# A replay of the rows alone: no repeated prospect, late event, objection or slow call.
ROWS_ONLY = {
    "repeat_rate": 0.0,
    "late_rate": 0.0,
    "do_not_call_rate": 0.0,
    "slow_call_rate": 0.0,
}


def good(plan: list[ScheduledRecord], kind: str) -> list[ScheduledRecord]:
    """The rows' own valid events or outcomes (no malformed extra, no late copy)."""
    return [r for r in plan if r.kind == kind and r.malformed is None and not r.late]


def total(plan: list[ScheduledRecord]) -> MonthCounts:
    counts = MonthCounts()
    for month in count_plan(plan).values():
        counts += month
    return counts


def test_plan_is_in_event_time_and_outcomes_follow_their_event_by_the_delay(frame):
    delay = timedelta(days=2)
    plan = plan_replay(frame, ReplayOptions(outcome_delay=delay, bad_rate=0.05, slow_call_rate=0.0))
    assert [(r.at, r.order) for r in plan] == sorted((r.at, r.order) for r in plan)
    events, outcomes = good(plan, "event"), good(plan, "outcome")
    assert len(events) == len(outcomes) == len(frame)
    event_at = {r.record_id: r.at for r in events}
    position = {(r.kind, r.record_id): i for i, r in enumerate(plan) if r.malformed is None}
    for outcome in outcomes:
        assert outcome.at == event_at[outcome.record_id] + delay
        assert position[("outcome", outcome.record_id)] > position[("event", outcome.record_id)]
        called_at = datetime.fromisoformat(json.loads(outcome.value)["called_at"])
        assert called_at == outcome.at
    # Outcomes of a month's last days are published among the next month's events.
    first, second = sorted({r.period for r in events})[:2]
    last_of_first = max(r.at for r in events if r.period == first)
    spill = [r for r in outcomes if r.period == second and r.at - delay <= last_of_first]
    assert spill
    assert any(r.kind == "event" and r.period == second and r.at < spill[-1].at for r in plan)


def test_delay_zero_publishes_each_outcome_right_after_its_event(frame):
    plan = plan_replay(frame, ReplayOptions(months=1, outcome_delay=timedelta(0), **ROWS_ONLY))
    assert [r.kind for r in plan] == ["event", "outcome"] * (len(plan) // 2)
    assert all(a.record_id == b.record_id for a, b in zip(plan[::2], plan[1::2], strict=True))


def test_occurred_at_is_period_clamped_day_and_office_hours_in_file_order():
    rows = pd.DataFrame(
        {
            "period": ["2009-02", "2009-02", "2009-02", "2009-06", "2010-11"],
            "day": [30, 28, 28, 15, 3],
        }
    )
    times = occurred_times(rows)
    # 30 February becomes the 28th: three calls that day, spread over 09:00-18:00 in file order.
    assert times[:3] == [
        datetime(2009, 2, 28, 9, 0, tzinfo=UTC),
        datetime(2009, 2, 28, 12, 0, tzinfo=UTC),
        datetime(2009, 2, 28, 15, 0, tzinfo=UTC),
    ]
    assert times[3:] == [
        datetime(2009, 6, 15, 9, tzinfo=UTC),
        datetime(2010, 11, 3, 9, tzinfo=UTC),
    ]


def test_events_carry_row_features_and_ids_from_the_file_position(frame):
    plan = plan_replay(frame, ReplayOptions(start="2009-03", months=2, repeat_rate=0.0))
    events = good(plan, "event")
    assert {r.period for r in events} == {"2009-03", "2009-04"}
    expected_rows = frame.index[frame["period"].isin(["2009-03", "2009-04"])]
    assert sorted(r.row for r in events) == list(expected_rows)
    for record in events:
        event = decode_prospect(record.value)
        assert event.event_id == record.record_id == f"uci-{record.row}"
        assert event.prospect_id == f"uci-prospect-{record.row}"
        assert record.key == event.prospect_id.encode()
        row = frame.loc[record.row]
        assert event.features()["balance"] == row["balance"] and event.job == row["job"]
        assert event.occurred_at == record.at
        assert f"{event.occurred_at:%Y-%m}" == row["period"]
        length = calendar.monthrange(event.occurred_at.year, event.occurred_at.month)[1]
        assert event.occurred_at.day == min(row["day"], length)


def test_ids_and_bytes_are_the_same_on_every_replay(frame):
    options = ReplayOptions(start="2008-07", months=3, bad_rate=0.1, seed=5)
    first, again = plan_replay(frame, options), plan_replay(frame, options)
    assert first == again
    other_seed = plan_replay(frame, ReplayOptions(start="2008-07", months=3, bad_rate=0.1, seed=6))
    assert good(other_seed, "event") == good(first, "event")
    assert [r for r in other_seed if r.malformed] != [r for r in first if r.malformed]
    # The month filter does not renumber rows: the same row has the same id in a longer replay.
    whole = {r.record_id: r.value for r in good(plan_replay(frame, ReplayOptions()), "event")}
    assert all(whole[r.record_id] == r.value for r in good(first, "event"))


def test_month_options_are_checked(frame):
    with pytest.raises(CallscoreError, match="outside the data, which covers 2008-05 to 2010-11"):
        plan_replay(frame, ReplayOptions(start="2011-01"))
    with pytest.raises(CallscoreError, match="YYYY-MM"):
        ReplayOptions(start="2009-13")
    with pytest.raises(CallscoreError, match="--months must be at least 1"):
        ReplayOptions(months=0)
    with pytest.raises(CallscoreError, match="--bad-rate must be between 0 and 1"):
        ReplayOptions(bad_rate=1.5)
    with pytest.raises(CallscoreError, match="--do-not-call-rate must be between 0 and 1"):
        ReplayOptions(do_not_call_rate=-0.1)
    with pytest.raises(CallscoreError, match="--slow-call-delay must not be negative"):
        ReplayOptions(slow_call_delay=timedelta(days=-1))
    with pytest.raises(CallscoreError, match="no 'period' column"):
        plan_replay(synthetic_bank_frame(rows=50, seed=1), ReplayOptions())


def test_a_row_the_contracts_reject_stops_the_plan_naming_the_row(frame):
    broken = frame.copy()
    broken.loc[7, "age"] = 17
    with pytest.raises(CallscoreError, match=r"row 7 cannot be replayed: .*age"):
        plan_replay(broken, ReplayOptions())
    broken = frame.copy()
    broken.loc[9, "duration"] = 90_000
    with pytest.raises(CallscoreError, match=r"row 9 cannot be replayed: .*duration_seconds"):
        plan_replay(broken, ReplayOptions())


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.5])
def test_malformed_extras_are_added_never_substituted_and_each_is_rejected(frame, rate):
    plan = plan_replay(frame, ReplayOptions(bad_rate=rate, seed=3))
    events, outcomes = good(plan, "event"), good(plan, "outcome")
    assert len(events) == len(outcomes) == len(frame)
    bad = [r for r in plan if r.malformed is not None]
    bad_events = [r for r in bad if r.kind == "event"]
    assert len(bad_events) == round(rate * len(frame))
    assert len(bad) - len(bad_events) == round(rate * len(frame))
    if rate >= 0.05:
        assert {r.malformed for r in bad_events} == set(BAD_EVENT_KINDS)
        assert {r.malformed for r in bad if r.kind == "outcome"} == set(BAD_OUTCOME_KINDS)
    for record in bad:
        decode = decode_prospect if record.kind == "event" else decode_outcome
        with pytest.raises(InvalidEvent) as rejected:
            decode(record.value)
        assert rejected.value.kind == DECODED_AS[str(record.malformed)]
        assert record.row is None and record.record_id.startswith(f"uci-bad-{record.kind}-")
    counts = count_plan(plan)
    assert sum(c.bad_events for c in counts.values()) == len(bad_events)
    assert sum(c.events for c in counts.values()) == len(frame)


def test_no_event_carries_a_post_call_field(frame):
    plan = plan_replay(frame, ReplayOptions(bad_rate=0.5, seed=1))
    for record in plan:
        if record.kind != "event":
            continue
        text = record.value.decode()
        leaked = [f for f in POST_CALL_FIELDS if f'"{f}"' in text]
        # Only the deliberate post-call extras name one; they are rejected and carry no label.
        assert not leaked or (record.malformed == "post_call_field" and leaked == ["duration"])


def test_outcomes_carry_the_true_label_and_duration_of_their_row(frame):
    plan = plan_replay(frame, ReplayOptions(bad_rate=0.05))
    outcomes = good(plan, "outcome")
    assert len(outcomes) == len(frame)
    for record in outcomes:
        outcome = decode_outcome(record.value)
        row = frame.loc[record.row]
        assert outcome.subscribed == (row["y"] == "yes")
        assert outcome.duration_seconds == row["duration"]
        assert outcome.event_id == f"uci-{record.row}"
        assert outcome.task_id == task_id_for(f"uci-{record.row}")


def test_option_parsers():
    assert parse_delay("2d") == timedelta(days=2)
    assert parse_delay("12h") == timedelta(hours=12)
    assert parse_delay("30m") == timedelta(minutes=30)
    assert parse_delay("0") == timedelta(0)
    with pytest.raises(CallscoreError, match="--outcome-delay"):
        parse_delay("5")
    assert parse_speedup("0") == parse_speedup("inf") == float("inf")
    assert parse_speedup("259200") == 259200
    with pytest.raises(CallscoreError, match="--speedup"):
        parse_speedup("-1")
    with pytest.raises(CallscoreError, match="--speedup"):
        parse_speedup("fast")


def test_wall_offsets_map_event_time_by_the_speedup(frame):
    plan = plan_replay(frame, ReplayOptions(months=1))
    offsets = wall_offsets(plan, 86_400)
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert offsets[-1] == pytest.approx((plan[-1].at - plan[0].at).total_seconds() / 86_400)
    assert set(wall_offsets(plan, float("inf"))) == {0.0}


def test_simulate_says_what_is_wrong_with_its_input(tmp_path, capsys, monkeypatch):
    assert main(["simulate", "--data", str(tmp_path / "missing.csv")]) == 1
    assert "data file not found" in capsys.readouterr().err
    assert main(["simulate", "--outcome-delay", "soon"]) == 1
    assert "--outcome-delay must be a number with a unit" in capsys.readouterr().err
    data = tmp_path / "bank.csv"
    synthetic_bank_frame(rows=200, seed=2).to_csv(data, sep=";", index=False)
    # Without --from the replay starts where the trainer's base data stops.
    monkeypatch.setenv("CALLSCORE_BASE_DATA_UNTIL", "2011-01")
    assert main(["simulate", "--data", str(data)]) == 1
    assert "--from 2011-01 is outside the data" in capsys.readouterr().err


def test_simulate_replays_two_months_onto_the_broker(kafka_settings, tmp_path, monkeypatch, capsys):
    data = tmp_path / "bank.csv"
    synthetic_bank_frame(rows=3000, seed=11).to_csv(data, sep=";", index=False)
    frame, _sha = load_bank(data)
    options = ReplayOptions(start="2008-06", months=2, bad_rate=0.05, seed=9)
    plan = plan_replay(frame, options)
    for name, value in kafka_settings.as_env().items():
        monkeypatch.setenv(name, value)
    argv = ["simulate", "--data", str(data), "--from", "2008-06", "--months", "2"]
    argv.append("--one-call-per-row")  # one outcome per event (attempts: tested without Kafka)
    assert main([*argv, "--speedup", "inf", "--bad-rate", "0.05", "--seed", "9"]) == 0
    printed = capsys.readouterr().out
    line = re.search(
        r"replayed events=(\d+) outcomes=(\d+) no_decision=0 malformed_events=(\d+) "
        r"malformed_outcomes=(\d+) "
        r"late_events=(\d+) do_not_call=(\d+) lifted=(\d+)",
        printed,
    )
    assert line is not None, printed
    summary = tuple(int(n) for n in line.groups())

    dnc = kafka_settings.topic_do_not_call
    topics = [kafka_settings.topic_prospects, kafka_settings.topic_outcomes, dnc]
    records = read_topics(kafka_settings, topics, timeout=30)
    by_topic = Counter(r.topic for r in records)
    planned = Counter(r.topic(kafka_settings) for r in plan)
    assert by_topic == planned
    # The do-not-call records as planned, tombstones (lifts) included, in order per prospect.
    objections: dict[bytes | None, list[bytes | None]] = defaultdict(list)
    for record in records:
        if record.topic == dnc:
            objections[record.key].append(record.value)
    planned_objections: dict[bytes | None, list[bytes | None]] = defaultdict(list)
    for r in plan:
        if r.kind == "do_not_call":
            planned_objections[r.key].append(r.value)
    assert objections == planned_objections
    assert any(None in values for values in objections.values())
    bad_values = {(r.kind, r.value) for r in plan if r.malformed}
    labels: dict[str, bool] = {}
    outcome_count: Counter[str] = Counter()
    seen_bad = Counter()
    for record in records:
        if record.topic == dnc:
            continue
        kind = "event" if record.topic == kafka_settings.topic_prospects else "outcome"
        try:
            if kind == "event":
                event = decode_prospect(record.value)
                labels.setdefault(event.event_id, False)
            else:
                outcome = decode_outcome(record.value)
                assert outcome.event_id is not None
                outcome_count[outcome.event_id] += 1
                labels[outcome.event_id] = outcome.subscribed
        except InvalidEvent:
            assert (kind, record.value or b"") in bad_values
            seen_bad[kind] += 1
    good_events = good(plan, "event")
    late = [r for r in plan if r.late]
    assert {r.record_id for r in good_events + late} == set(labels)
    assert all(outcome_count[r.record_id] == 1 for r in good_events)
    assert not any(outcome_count[r.record_id] for r in late)  # nothing to call: no outcome
    truth = {f"uci-{i}": y == "yes" for i, y in frame["y"].items()}
    assert all(labels[r.record_id] == truth[r.record_id] for r in good_events)
    counts = total(plan)
    assert summary == (
        len(good_events),
        len(good(plan, "outcome")),
        seen_bad["event"],
        seen_bad["outcome"],
        len(late),
        counts.do_not_call,
        counts.lifted,
    )
    assert seen_bad["event"] == round(0.05 * len(good_events)) > 0
    assert len(late) > 0 and counts.do_not_call > 0


def test_replay_paces_event_time_into_wall_time(kafka_settings, frame):
    plan = plan_replay(frame, ReplayOptions(start="2009-01", months=2))
    span = (plan[-1].at - plan[0].at).total_seconds()
    speedup = span / 2.0  # two months of event time in about two wall seconds
    seen: list[tuple[str, float]] = []
    summary = run_replay(
        kafka_settings, plan, speedup, on_month=lambda p, _c, wall: seen.append((p, wall))
    )
    assert 2.0 <= summary.wall_seconds < 6.0
    assert [p for p, _ in seen] == sorted(count_plan(plan)) and seen[-1][1] >= 2.0
    assert summary.months == count_plan(plan)
    records = read_topics(kafka_settings, [kafka_settings.topic_prospects], timeout=30)
    assert len(records) == total(plan).valid_events
    # The producer stamps each record when it sends it: the stamps follow the mapped event time.
    due = {r.value: offset for r, offset in zip(plan, wall_offsets(plan, speedup), strict=True)}
    start_ms = min(r.timestamp_ms for r in records)
    lateness = [(r.timestamp_ms - start_ms) / 1000 - due[r.value or b""] for r in records]
    assert min(lateness) > -0.05 and max(lateness) < 1.0


# --- the extras that make every rule of the call queue fire ---------------------------------------


def test_repeated_prospects_are_earlier_rows_prospects_the_same_in_every_replay(frame):
    plan = plan_replay(frame, ReplayOptions(repeat_rate=0.2))
    events = good(plan, "event")
    at_of_row = {r.row: r.at for r in events}
    owner_of = {r.row: int(r.key.decode().rsplit("-", 1)[1]) for r in events}
    repeats = [row for row, owner in owner_of.items() if owner != row]
    # About the share asked (the first rows have nobody earlier within reach).
    assert 0.15 * len(events) < len(repeats) <= 0.22 * len(events)
    for row in repeats:
        owner = owner_of[row]
        assert owner_of[owner] == owner  # named after the prospect's first contact
        assert at_of_row[owner] < at_of_row[row]
    # The outcome names the prospect of its event.
    for outcome in good(plan, "outcome"):
        assert decode_outcome(outcome.value).prospect_id == f"uci-prospect-{owner_of[outcome.row]}"
    # Later contacts come before the earlier call's outcome, while the prospect cools down after
    # it, and after that: supersede, cooling down and a fresh task can all happen.
    gaps = [at_of_row[row] - at_of_row[_previous(row, owner_of, at_of_row)] for row in repeats]
    assert min(gaps) < timedelta(days=2) and max(gaps) > timedelta(days=32)
    assert any(timedelta(days=2) < gap < timedelta(days=32) for gap in gaps)
    assert max(gaps) <= REPEAT_WITHIN
    # The mapping is the file's, not the replay's: another seed or a window keep it.
    assert good(plan_replay(frame, ReplayOptions(repeat_rate=0.2, seed=8)), "event") == events
    window = plan_replay(frame, ReplayOptions(start="2009-05", months=3, repeat_rate=0.2))
    assert all(r.key == f"uci-prospect-{owner_of[r.row]}".encode() for r in good(window, "event"))
    alone = good(plan_replay(frame, ReplayOptions(repeat_rate=0.0)), "event")
    assert all(r.key == f"uci-prospect-{r.row}".encode() for r in alone)


def _previous(row: int, owner_of: dict[int, int], at_of_row: dict[int, datetime]) -> int:
    """The prospect's contact just before `row`."""
    earlier = [
        r for r, o in owner_of.items() if o == owner_of[row] and at_of_row[r] < at_of_row[row]
    ]
    return max(earlier, key=lambda r: at_of_row[r])


def test_late_events_are_copies_dated_before_the_event_they_follow(frame):
    plan = plan_replay(frame, ReplayOptions(late_rate=0.1, seed=4))
    events = {r.row: r for r in good(plan, "event")}
    late = [r for r in plan if r.late]
    assert len(late) == round(0.1 * len(events))
    position = {id(r): i for i, r in enumerate(plan)}
    for record in late:
        event = decode_prospect(record.value)
        original = events[record.row]
        assert record.kind == "event" and record.malformed is None
        assert event.event_id == record.record_id == f"{original.record_id}-late"
        assert record.key == original.key and event.prospect_id == original.key.decode()
        assert event.features() == decode_prospect(original.value).features()
        # Published after the event it copies, dated before it.
        assert event.occurred_at == original.at - LATE_BY and record.at == original.at + LATE_BY
        assert position[id(record)] > position[id(original)]
    counts = total(plan)
    assert (counts.events, counts.late_events) == (len(events), len(late))
    assert counts.prospect_records == len(events) + len(late)
    assert not any(r.late for r in plan_replay(frame, ReplayOptions(late_rate=0.0)))


def test_do_not_call_entries_come_after_a_first_event_and_a_few_are_lifted(frame, settings):
    plan = plan_replay(frame, ReplayOptions(do_not_call_rate=0.1, lift_rate=0.5, seed=2))
    first_at: dict[bytes, datetime] = {}
    for record in good(plan, "event"):
        first_at.setdefault(record.key, record.at)
    records = [r for r in plan if r.kind == "do_not_call"]
    entries = [r for r in records if r.value is not None]
    lifts = [r for r in records if r.value is None]
    assert len(entries) == round(0.1 * len(first_at)) and len(lifts) == round(0.5 * len(entries))
    requested: dict[bytes, datetime] = {}
    for record in entries:
        entry = decode_do_not_call(record.key, record.value)
        assert entry is not None and entry.prospect_id == record.record_id
        assert record.topic(settings) == settings.topic_do_not_call
        assert entry.requested_at == record.at
        assert first_at[record.key] < record.at <= first_at[record.key] + OBJECTION_WITHIN
        requested[record.key] = record.at
    assert len(requested) == len(entries)  # one objection per prospect
    for record in lifts:
        after = record.at - requested[record.key]
        assert LIFT_AFTER < after <= LIFT_AFTER + LIFT_WITHIN
    counts = total(plan)
    assert (counts.do_not_call, counts.lifted) == (len(entries), len(lifts))
    assert counts.events == len(good(plan, "event"))  # counted apart from the events


def test_slow_calls_come_after_the_slow_delay(frame):
    slow = timedelta(days=21)
    options = ReplayOptions(slow_call_rate=0.1, slow_call_delay=slow, seed=3)
    plan = plan_replay(frame, options)
    event_at = {r.record_id: r.at for r in good(plan, "event")}
    delays = Counter(r.at - event_at[r.record_id] for r in good(plan, "outcome"))
    slow_count = round(0.1 * len(event_at))
    assert delays == {slow: slow_count, timedelta(days=2): len(event_at) - slow_count}
    for record in good(plan, "outcome"):
        assert decode_outcome(record.value).called_at == record.at
    assert [(r.at, r.order) for r in plan] == sorted((r.at, r.order) for r in plan)


RULE_COUNTS = (
    "queued", "superseded", "late", "cooling_down", "suppressed", "duplicate", "closed", "stale",
    "do_not_call", "lifted",
)  # fmt: skip


def _queue_counts(plan: list[ScheduledRecord], settings: Settings) -> QueueCounts:
    """The plan's valid records through the call queue's own rules, per partition in order (each
    event scored as the scorer would log it, with one score: the rules do not look at it)."""
    inputs: dict[int, list[QueueInput]] = defaultdict(list)
    for offset, record in enumerate(r for r in plan if r.malformed is None):
        prospect_id = record.key.decode()
        partition = partition_for(prospect_id, settings.partitions)
        where = (prospect_id, partition, offset, record.value)
        if record.kind == "event":
            inputs[partition].append(QueueInput("scored", *where, prediction=_scored(record)))
        elif record.kind == "outcome":
            outcome = decode_outcome(record.value)
            inputs[partition].append(QueueInput("outcome", *where, outcome=outcome))
        else:
            entry = decode_do_not_call(record.key, record.value)
            inputs[partition].append(QueueInput("do_not_call", *where, entry=entry))
    counts = QueueCounts()
    topics, policy = QueueTopics.of(settings), QueuePolicy.of(settings)
    for partition, items in inputs.items():
        result = PartitionQueue(partition, topics, policy).apply(items).counts
        for name in RULE_COUNTS:
            setattr(counts, name, getattr(counts, name) + getattr(result, name))
        counts.withdrawn.update(result.withdrawn)
    return counts


def _scored(record: ScheduledRecord) -> PredictionRecord:
    event = decode_prospect(record.value)
    return PredictionRecord(
        event_id=event.event_id,
        task_id=task_id_for(event.event_id),
        prospect_id=event.prospect_id,
        occurred_at=event.occurred_at,
        features=event.features(),
        score=0.5,
        priority="medium",
        percentile=50.0,
        model_version=1,
        scored_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_every_rule_of_the_call_queue_fires_on_the_default_plan(frame, settings):
    counts = _queue_counts(plan_replay(frame, ReplayOptions(bad_rate=0.02)), settings)
    for name in ("queued", "superseded", "late", "cooling_down", "suppressed", "closed"):
        assert getattr(counts, name) > 0, name
    assert counts.stale > 0 and counts.do_not_call > 0 and counts.lifted > 0
    assert set(counts.withdrawn) == {"closed", "expired", "suppressed"}
    assert counts.duplicate == 0  # the replay never sends an event twice
    # The rows alone open one task per event, and every call closes its task.
    rows = _queue_counts(plan_replay(frame, ReplayOptions(**ROWS_ONLY)), settings)
    assert rows.queued == len(frame) == rows.closed
    assert rows.late == rows.cooling_down == rows.suppressed == rows.stale == 0


def _through_the_queue(plan: list[ScheduledRecord], settings: Settings) -> QueueCounts:
    """The plan's valid records through the call queue's own rules, in order, each retry the
    queue sends scored (score 0.5) and applied right after the outcome that sent it."""
    topics, policy = QueueTopics.of(settings), QueuePolicy.of(settings)
    queues: dict[int, PartitionQueue] = {}
    total = QueueCounts()
    due: dict[str, datetime] = {}  # a retry's task id -> its not_before
    offsets = itertools.count()  # the input topic's, increasing: none is a redelivery

    def apply(kind: str, key: bytes, value: bytes) -> None:
        nonlocal total
        prospect_id = key.decode()
        partition = partition_for(prospect_id, settings.partitions)
        queue = queues.setdefault(partition, PartitionQueue(partition, topics, policy))
        where = (prospect_id, partition, next(offsets), value)
        if kind == "event":
            item = QueueInput("scored", *where, prediction=_scored_value(value))
        else:
            outcome = decode_outcome(value)
            assert outcome.task_id is not None
            # A dialer calls a retry once it is due, never before.
            assert outcome.called_at >= due.get(outcome.task_id, outcome.called_at)
            item = QueueInput("outcome", *where, outcome=outcome)
        result = queue.apply([item])
        for entry in result.entries.values():
            if entry.open_task is not None and entry.open_task.not_before is not None:
                due[entry.open_task.task_id] = entry.open_task.not_before
        total = total + result.counts
        for retry in (r for r in result.outgoing if r.topic == topics.prospects):
            apply("event", retry.key, retry.value)

    for record in (r for r in plan if r.malformed is None):
        apply(record.kind, record.key, record.value)
    return total


def _scored_value(value: bytes) -> PredictionRecord:
    event = decode_prospect(value)
    record = _scored(ScheduledRecord(event.occurred_at, (0, 0), "event", b"", value, "", None))
    return record.model_copy(
        update={
            "not_before": event.not_before,
            "retry_of": event.retry_of,
            "retry_reason": event.retry_reason,
        }
    )


def test_a_row_is_replayed_as_its_contacts_each_a_task_the_queue_made(frame, settings):
    policy = QueuePolicy.of(settings)
    plan = plan_replay(frame, ReplayOptions(**ROWS_ONLY, attempts=policy))
    events, outcomes = good(plan, "event"), good(plan, "outcome")
    assert {decode_prospect(r.value).campaign for r in events} == {1}  # the first contact
    calls = Counter(r.row for r in outcomes)
    campaigns = frame["campaign"].astype(int)
    assert calls == {row: min(c, policy.max_attempts) for row, c in campaigns.items()}
    finals = [decode_outcome(r.value) for r in outcomes if r.final]
    assert len(finals) == len(frame) and all(o.reached for o in finals)
    assert {decode_outcome(r.value).disposition for r in outcomes if not r.final} == {
        "no_answer", "busy", "voicemail", "callback"
    }  # fmt: skip
    assert total(plan).no_decision == sum(calls.values()) - len(frame)

    # Every later call names the task of the retry the queue sent, once it is due: each row's
    # last call closes its task; nothing is stale.
    counts = _through_the_queue(plan, settings)
    assert counts.recycled == total(plan).no_decision
    assert counts.closed == len(frame) and counts.stale == 0
    assert counts.queued == len(frame) + counts.recycled
    assert counts.exhausted == 0  # a row with more contacts than allowed is reached at the last


# --- the hold: a call's outcome waits for the queue's decision of its event -----------------------


def test_each_call_of_the_replay_with_attempts_names_its_event_and_the_task_it_retries(
    frame, settings
):
    policy = QueuePolicy.of(settings)
    plan = plan_replay(frame, ReplayOptions(**ROWS_ONLY, months=2, attempts=policy))
    by_row: dict[int, list[ScheduledRecord]] = defaultdict(list)
    for record in good(plan, "outcome"):
        by_row[record.row].append(record)
    for calls in by_row.values():
        first = calls[0].call
        assert first is not None and first.attempt == 1 and first.retry_of is None
        assert first.event_id == calls[0].record_id  # the row's own event
        for before, after in itertools.pairwise(calls):
            ref, previous = after.call, before.call
            assert ref is not None and previous is not None
            assert ref.attempt == previous.attempt + 1
            assert (ref.retry_of, ref.retried_event_id) == (previous.task_id, previous.event_id)
            assert ref.event_id == retry_event_id(previous.task_id)
        for record in calls:
            outcome = decode_outcome(record.value)
            assert record.call is not None
            assert (outcome.event_id, outcome.task_id) == (
                record.call.event_id,
                record.call.task_id,
            )
    # Nothing else is held: the events, and every outcome of one call per row.
    assert all(r.call is None for r in plan if r.kind != "outcome")
    assert all(r.call is None for r in plan_replay(frame, ReplayOptions(months=2)))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class DecisionLog:
    """What a `Decisions` answers from: events decided (when), tasks queued, tasks ended."""

    def __init__(self) -> None:
        self.decided: dict[str, float] = {}
        self.queued_tasks: set[str] = set()
        self.ended_tasks: set[str] = set()
        self.lines = 0

    def decided_at(self, event_id: str) -> float | None:
        return self.decided.get(event_id)

    def queued(self, task_id: str) -> bool:
        return task_id in self.queued_tasks

    def ended(self, task_id: str) -> bool:
        return task_id in self.ended_tasks


class FakeDecisions(DecisionLog):
    """A `Decisions` set by hand; `poll` advances the clock and runs what is scheduled."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.later: list[tuple[float, str]] = []  # (when, event id) to decide then

    def decide(self, event_id: str, queued: bool = True) -> None:
        self.decided[event_id] = self.clock.now
        self.lines += 1
        if queued:
            self.queued_tasks.add(task_id_for(event_id))

    def poll(self, seconds: float) -> None:
        self.clock.now += seconds
        for when, event_id in [item for item in self.later if item[0] <= self.clock.now]:
            self.later.remove((when, event_id))
            self.decide(event_id)


def _call_record(ref: CallRef, key: bytes = b"P") -> ScheduledRecord:
    at = datetime(2009, 5, 1, tzinfo=UTC)
    return ScheduledRecord(at, (0, 0), "outcome", key, b"{}", ref.event_id, 0, call=ref)


def _calls(event_id: str, count: int) -> list[CallRef]:
    """A row's calls: its event, then each retry of the previous call's task."""
    refs = [CallRef(1, event_id, task_id_for(event_id))]
    while len(refs) < count:
        previous = refs[-1]
        retry = retry_event_id(previous.task_id)
        refs.append(
            CallRef(
                previous.attempt + 1,
                retry,
                task_id_for(retry),
                retry_of=previous.task_id,
                retried_event_id=previous.event_id,
            )
        )
    return refs


def test_a_call_waits_for_its_event_on_the_prediction_log_and_no_longer():
    clock = FakeClock()
    decisions = FakeDecisions(clock)
    hold = CallHold(decisions, timeout=30.0, grace=1.0, clock=clock)
    first, second, third = _calls("uci-1", 3)
    decisions.decide(first.event_id)
    assert hold.wait(_call_record(first), decisions.poll) == 0.0  # decided: not held
    decisions.later.append((clock.now + 0.4, second.event_id))  # the retry comes 0.4 s later
    assert hold.wait(_call_record(second), decisions.poll) == pytest.approx(0.4, abs=0.02)
    assert decisions.decided_at(second.event_id) is not None
    assert (hold.stats.held, hold.stats.too_long, hold.stats.skipped) == (1, 0, 0)
    assert hold.stats.held_by_attempt == {2: 1}

    # An event nobody decides (here, no queue writes anything): published after the timeout...
    assert hold.wait(_call_record(third), decisions.poll) == pytest.approx(30.0, abs=0.02)
    assert hold.stats.too_long == 1 and hold.stats.max_seconds == pytest.approx(30.0, abs=0.02)
    # ...then, while the log stays silent, the next calls are not held either,
    (other,) = _calls("uci-2", 1)
    assert hold.wait(_call_record(other), decisions.poll) == 0.0
    assert hold.stats.too_long == 2
    # until the queue decides something again.
    decisions.decide("uci-elsewhere")
    (again,) = _calls("uci-3", 1)
    decisions.later.append((clock.now + 0.2, again.event_id))
    assert hold.wait(_call_record(again), decisions.poll) == pytest.approx(0.2, abs=0.02)
    assert hold.stats.too_long == 2 and hold.stats.held == 3  # `other` was not held


def test_a_call_whose_event_will_not_come_is_not_held():
    clock = FakeClock()
    decisions = FakeDecisions(clock)
    hold = CallHold(decisions, timeout=30.0, grace=1.0, clock=clock)

    # A retry under the floor is on the log (it was scored): its own call goes at once (stale);
    # the next call's event, the retry of a task never queued, never comes: it goes once the
    # queue's records have had the grace to show the task.
    a1, a2, a3 = _calls("uci-1", 3)
    decisions.decide(a1.event_id)
    decisions.decide(a2.event_id, queued=False)
    assert hold.wait(_call_record(a2), decisions.poll) == 0.0
    clock.now += 0.3
    assert hold.wait(_call_record(a3), decisions.poll) == pytest.approx(0.7, abs=0.02)
    # A task withdrawn (expired, superseded, suppressed...) is never retried: at once.
    b1, b2 = _calls("uci-2", 2)
    decisions.decide(b1.event_id)
    decisions.ended_tasks.add(b1.task_id)
    assert hold.wait(_call_record(b2), decisions.poll) == 0.0
    # Nor is a task whose call went before its event was decided: its outcome was stale.
    c1, c2 = _calls("uci-3", 2)
    hold_short = CallHold(decisions, timeout=0.5, grace=1.0, clock=clock)
    decisions.decide("something")  # not silent
    assert hold_short.wait(_call_record(c1), decisions.poll) == pytest.approx(0.5, abs=0.02)
    decisions.decide("something else")
    assert hold_short.wait(_call_record(c2), decisions.poll) == 0.0
    assert (hold_short.stats.too_long, hold_short.stats.skipped) == (1, 1)
    # A prospect who objects: the queue suppresses its events without a line. Lifted: held again.
    (d1,) = _calls("uci-4", 1)
    objection = ScheduledRecord(
        datetime(2009, 5, 1, tzinfo=UTC), (0, 5), "do_not_call", b"Q", b"{}", "Q", 0
    )
    hold.note(objection)
    assert hold.wait(_call_record(d1, key=b"Q"), decisions.poll) == 0.0
    assert (hold.stats.held, hold.stats.skipped, hold.stats.too_long) == (1, 3, 0)
    hold.note(replace(objection, value=None))
    decisions.later.append((clock.now + 0.1, d1.event_id))
    assert hold.verdict(d1, b"Q") is None
    # An objection right after the event reached the queue first (routed, not scored): the
    # event was suppressed, without a line. Lifted before the call: once the objection is
    # older than the grace, the call is not waited for; one older than the event does not count.
    (e1,) = _calls("uci-5", 1)
    event = ScheduledRecord(
        datetime(2009, 5, 1, tzinfo=UTC), (0, 6), "event", b"R", b"{}", e1.event_id, 0
    )
    hold.note(event)
    clock.now += 0.05
    hold.note(replace(objection, key=b"R", record_id="R"))
    hold.note(replace(objection, key=b"R", record_id="R", value=None))
    assert hold.verdict(e1, b"R") is None  # the event may still come
    clock.now += 1.0
    assert hold.verdict(e1, b"R") is Verdict.SKIPPED
    (f1,) = _calls("uci-6", 1)
    hold.note(replace(event, record_id=f1.event_id))
    assert hold.verdict(f1, b"R") is None
    # An event published while its prospect objected was suppressed: lifted before the call,
    # the call waits the grace at most.
    (g1,) = _calls("uci-7", 1)
    hold.note(replace(objection, key=b"S", record_id="S"))
    clock.now += 2.0
    hold.note(replace(event, key=b"S", record_id=g1.event_id))
    hold.note(replace(objection, key=b"S", record_id="S", value=None))
    assert hold.verdict(g1, b"S") is None
    clock.now += 1.0
    assert hold.verdict(g1, b"S") is Verdict.SKIPPED


class InProcessQueue(DecisionLog):
    """The call queue's own rules behind a lag, on a fake clock: what the replay sends is
    applied `lag` seconds later, a retry the queue sends is scored and applied `lag` after that;
    its prediction-log lines and call-queue records are the `Decisions` the hold reads. Events
    score 0.5, but the retries of prospects in `low` score under the floor."""

    def __init__(self, settings: Settings, clock: FakeClock, lag: float, low: set[str]) -> None:
        super().__init__()
        self.topics, self.policy = QueueTopics.of(settings), QueuePolicy.of(settings)
        self.partitions = settings.partitions
        self.clock, self.lag, self.low = clock, lag, low
        self.queues: dict[int, PartitionQueue] = {}
        self.pending: list[tuple[float, int, str, bytes, bytes | None]] = []
        self.sequence = 0
        self.offsets = itertools.count()  # the queue's input offsets: none is a redelivery
        self.counts = QueueCounts()
        self.sent_at: dict[str, float] = {}  # an outcome's task id -> when the replay sent it

    def send(self, record: ScheduledRecord) -> None:
        if record.malformed is None:
            if record.kind == "outcome":
                self.sent_at[decode_outcome(record.value).task_id or ""] = self.clock.now
            self._later(record.kind, record.key, record.value)

    def poll(self, seconds: float) -> None:
        self.clock.now += seconds
        while self.pending and self.pending[0][0] <= self.clock.now:
            _due, _n, kind, key, value = heapq.heappop(self.pending)
            self._apply(kind, key, value)

    def _later(self, kind: str, key: bytes, value: bytes | None) -> None:
        self.sequence += 1
        heapq.heappush(self.pending, (self.clock.now + self.lag, self.sequence, kind, key, value))

    def _apply(self, kind: str, key: bytes, value: bytes | None) -> None:
        prospect_id = key.decode()
        partition = partition_for(prospect_id, self.partitions)
        queue = self.queues.setdefault(
            partition, PartitionQueue(partition, self.topics, self.policy)
        )
        where = (prospect_id, partition, next(self.offsets), value)
        if kind == "event":
            assert value is not None
            prediction = _scored_value(value)
            if prediction.retry_of is not None and prospect_id in self.low:
                prediction = prediction.model_copy(update={"score": 0.01})
            item = QueueInput("scored", *where, prediction=prediction)
        elif kind == "outcome":
            item = QueueInput("outcome", *where, outcome=decode_outcome(value))
        else:
            item = QueueInput("do_not_call", *where, entry=decode_do_not_call(key, value))
        result = queue.apply([item])
        self.counts = self.counts + result.counts
        for out in result.outgoing:
            headers = dict(out.headers)
            if out.topic == self.topics.predictions:
                self.decided.setdefault((out.key or b"").decode(), self.clock.now)
                self.lines += 1
            elif out.topic == self.topics.queue and out.value is None:
                if headers.get(WITHDRAWAL_HEADER) != b"recycled":
                    self.ended_tasks.add(headers["task_id"].decode())
            elif out.topic == self.topics.queue:
                task = json.loads(out.value)
                self.queued_tasks.add(task["task_id"])
                if task.get("supersedes"):
                    self.ended_tasks.add(task["supersedes"])
            elif out.topic == self.topics.prospects:
                self._later("event", out.key or b"", out.value)


def _replay_through(
    plan: list[ScheduledRecord],
    settings: Settings,
    hold: bool,
    low: set[str] = frozenset(),
    skew: timedelta = timedelta(0),
) -> tuple[InProcessQueue, ReplaySummary, list[ScheduledRecord]]:
    clock = FakeClock()
    queue = InProcessQueue(settings, clock, lag=0.5, low=set(low))
    sent: list[ScheduledRecord] = []

    def send(record: ScheduledRecord) -> None:
        sent.append(record)
        queue.send(record)

    holder = CallHold(queue, clock=clock) if hold else None
    # Two months in about 2 s: a retry's call comes milliseconds after it is due.
    speedup = (plan[-1].at - plan[0].at).total_seconds() / 2.0
    summary = pace(
        plan, speedup, send, queue.poll, holder=holder, clock=clock,
        hold_skew=skew.total_seconds() / speedup,
    )  # fmt: skip
    queue.poll(60.0)  # what is still on its way
    return queue, summary, sent


def test_held_calls_come_after_their_task_and_none_is_stale(frame, settings):
    policy = QueuePolicy.of(settings)
    plan = plan_replay(frame, ReplayOptions(**ROWS_ONLY, months=2, attempts=policy))
    rows = {r.row for r in good(plan, "event")}
    calls = len(good(plan, "outcome"))

    # Unheld, at this speed the retries' calls come before their task: stale.
    unheld, summary, _sent = _replay_through(plan, settings, hold=False)
    assert summary.hold is None
    assert unheld.counts.stale > calls / 4 and unheld.counts.closed < len(rows)

    queue, summary, sent = _replay_through(plan, settings, hold=True)
    assert sent == plan  # in order: the records after a held call waited with it
    assert queue.counts.stale == 0 and queue.counts.closed == len(rows)
    assert queue.counts.recycled == calls - len(rows)
    for record in good(plan, "outcome"):  # every call after its event was decided
        ref = record.call
        assert ref is not None and queue.decided[ref.event_id] <= queue.sent_at[ref.task_id]
    stats = summary.hold
    assert stats is not None and stats.too_long == stats.skipped == 0
    # Many retries' calls waited (the others' retries were decided while an earlier one waited).
    assert stats.held > (calls - len(rows)) / 4 and {2, 3} <= set(stats.held_by_attempt)
    assert 0.5 <= stats.max_seconds < 1.5
    # The clock stopped while a call was held: the replay took its two seconds plus the stops,
    # about the holds (a hold overlaps the wait for the next record's time).
    assert summary.wall_seconds == pytest.approx(2.0 + summary.stopped_seconds, abs=0.2)
    assert stats.total_seconds - 1.0 < summary.stopped_seconds <= stats.total_seconds


def test_with_a_skew_other_prospects_go_on_while_a_call_is_held(frame, settings):
    policy = QueuePolicy.of(settings)
    plan = plan_replay(frame, ReplayOptions(**ROWS_ONLY, months=2, attempts=policy))
    rows = {r.row for r in good(plan, "event")}
    _queue, in_order, _sent = _replay_through(plan, settings, hold=True)
    queue, summary, sent = _replay_through(plan, settings, hold=True, skew=timedelta(days=3))
    # Each prospect's records in the plan's order, every call after its event was decided...
    assert sorted(sent, key=plan.index) == plan and sent != plan
    for key in {r.key for r in plan}:
        assert [r for r in sent if r.key == key] == [r for r in plan if r.key == key]
    assert queue.counts.stale == 0 and queue.counts.closed == len(rows)
    for record in good(plan, "outcome"):
        ref = record.call
        assert ref is not None and queue.decided[ref.event_id] <= queue.sent_at[ref.task_id]
    # ...and the holds overlap: the replay is much shorter.
    assert summary.wall_seconds < in_order.wall_seconds / 3
    assert summary.stopped_seconds < in_order.stopped_seconds / 2

    # The default plan (repeated prospects, late events, objections, slow calls): the queue
    # decides as in the replay held in order (a skew far below a task's lifetime expires
    # nothing more).
    plan = plan_replay(frame, ReplayOptions(months=2, attempts=policy, seed=3))
    in_order_queue, _summary, _sent = _replay_through(plan, settings, hold=True)
    queue, _summary, _sent = _replay_through(plan, settings, hold=True, skew=timedelta(days=3))
    assert queue.counts == in_order_queue.counts


def test_the_hold_never_waits_for_a_retry_that_will_not_come(frame, settings):
    policy = QueuePolicy.of(settings)
    # Rows alone, some prospects' retries under the floor: their later calls are not waited for.
    plan = plan_replay(frame, ReplayOptions(**ROWS_ONLY, months=2, attempts=policy))
    by_row: dict[int, list[ScheduledRecord]] = defaultdict(list)
    for record in good(plan, "outcome"):
        by_row[record.row].append(record)
    low = {calls[0].key.decode() for row, calls in by_row.items() if row % 5 == 0}
    queue, summary, _sent = _replay_through(plan, settings, hold=True, low=low)
    stopped = [c for c in by_row.values() if c[0].key.decode() in low and len(c) > 1]
    assert stopped
    # The retry under the floor is scored (its call stale), the retries after it never sent.
    assert queue.counts.below_floor == len(stopped)
    assert queue.counts.stale == sum(len(c) - 1 for c in stopped)
    stats = summary.hold
    assert stats is not None and stats.too_long == 0
    assert stats.skipped == sum(len(c) - 2 for c in stopped)
    assert stats.max_seconds < 1.5  # the grace for the task to show, not the timeout

    # The default plan (repeated prospects, late events, objections, slow calls): the queue's
    # own decisions make calls stale, and not one of them is waited for until the timeout.
    plan = plan_replay(frame, ReplayOptions(months=2, attempts=policy, seed=3))
    queue, summary, _sent = _replay_through(plan, settings, hold=True)
    stats = summary.hold
    assert stats is not None and stats.too_long == 0 and stats.skipped > 0
    assert queue.counts.stale > 0 and queue.counts.suppressed + queue.counts.superseded > 0
