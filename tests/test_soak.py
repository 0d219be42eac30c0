"""The soak tool's pure parts (bench/tools/soak.py): the traffic plan, the per-minute rows and
the accounting, on made-up inputs. No broker and no timing (the soak itself is run by hand)."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.tools.soak import (
    Produced,
    Sample,
    Traffic,
    account,
    lifetimes,
    minute_resources,
    per_minute,
    plan_traffic,
    targets,
)
from core.settings import Settings


def test_the_plan_paces_events_repeats_prospects_and_follows_with_outcomes() -> None:
    traffic = Traffic(minutes=3, rate=50, do_not_call_fraction=0.05)
    plan = plan_traffic(traffic)
    events = [p for p in plan if p.kind == "event"]
    assert len(events) == 3 * 60 * 50
    assert [p.at for p in plan] == sorted(p.at for p in plan)
    first_at: dict[int, float] = {}
    repeats = 0
    for event in events:
        if event.prospect in first_at:
            repeats += 1
            assert event.at - first_at[event.prospect] <= traffic.repeat_window_seconds
        else:
            first_at[event.prospect] = event.at
    assert Counter(e.prospect for e in events).most_common(1)[0][1] == 2  # a second, no third
    assert 0.17 < repeats / len(events) < 0.21
    at_of = {e.event: e.at for e in events}
    outcomes = [p for p in plan if p.kind == "outcome"]
    assert 0.4 < len(outcomes) / len(events) < 0.5  # those due after the end are left out
    delays = [o.at - at_of[o.event] for o in outcomes]
    assert delays == pytest.approx([traffic.outcome_delay_seconds] * len(outcomes))
    objections = [p for p in plan if p.kind == "do_not_call"]
    assert objections
    for entry in objections:  # never an event of that prospect after its do-not-call entry
        assert all(e.at < entry.at for e in events if e.prospect == entry.prospect)
    assert plan == plan_traffic(traffic)  # seeded


def sample(at: float, scorer_cpu: float, broker_cpu: float, rss: float) -> Sample:
    roles = {"main": rss / 2, "queue_worker": rss / 2}
    return Sample(at, scorer_cpu, rss, 3, broker_cpu, 2 * rss, 0.0, 1.0, roles, int(at))


def test_minute_resources_are_cpu_per_core_over_the_minute_and_rss_at_its_end() -> None:
    samples = [sample(0, 0, 0, 100), sample(30, 15, 6, 110), sample(60, 30, 12, 120)]
    row = minute_resources(samples, 0)
    assert row["scorer_cpu_pct"] == 50.0
    assert row["broker_cpu_pct"] == 20.0
    assert row["scorer_rss_mb"] == 120
    assert row["broker_rss_mb"] == 240
    assert row["scorer_rss_by_process"]["queue_worker"] == 60
    assert row["open_tasks"] == 60
    assert minute_resources(samples, 3)["scorer_cpu_pct"] is None


def test_per_minute_puts_events_in_their_minute_and_outputs_in_theirs() -> None:
    start = 1_000_000
    event_ms = {0: start + 1_000, 1: start + 2_000, 2: start + 61_000}
    firsts = {
        "prediction": {0: (start + 1_100, 0), 1: (start + 2_100, 0)},
        "task": {0: (start + 1_200, start + 1_300), 1: (start + 62_000, start + 62_100)},
        "queue": {0: (start + 1_250, start + 1_400), 1: (start + 62_050, start + 62_500)},
    }
    outputs = {
        "prediction": [start + 1_100, start + 2_100],
        "task": [start + 1_200, start + 62_000],
        "queue": [start + 1_250, start + 62_050],
        "tombstone": [start + 130_000],
    }
    rows = per_minute(start, event_ms, firsts, outputs, [], production_minutes=2)
    assert [(r["minute"], r["phase"]) for r in rows] == [
        (1, "produce"),
        (2, "produce"),
        (3, "drain"),
    ]
    first, second, third = rows
    assert first["events_in"] == 2 and second["events_in"] == 1
    assert first["tasks_out"] == 1 and second["tasks_out"] == 1
    assert third["queue_tombstones_out"] == 1
    assert first["event_to_task_ms"] == {"n": 2, "p50": 30_100.0, "p99": 59_402.0, "max": 60_000.0}
    assert first["event_to_queue_ms"]["max"] == 60_050.0
    assert first["event_to_queue_seen_ms"]["max"] == 60_500.0
    assert second["event_to_task_ms"]["n"] == 0  # event 2 never got one
    assert second["without_prediction"] == 1


def test_account_explains_an_event_without_a_task_only_by_an_earlier_reached_outcome() -> None:
    produced = Produced(
        start_ms=0,
        event_ms={0: 100, 1: 200, 2: 300, 3: 400, 4: 500, 5: 600, 6: 700},
        # reached: before event 1 of prospect 7 was decided; event 5's own outcome explains
        # nothing; event 4's after event 5 was decided
        outcome_ms={0: 205, 5: 601, 4: 700},
        do_not_call_ms={11: 750},  # got to the queue before event 6: suppressed, no line
        prospect_of={0: 7, 1: 7, 2: 8, 3: 9, 4: 10, 5: 10, 6: 11},
    )
    counts = {
        "prediction": Counter({0: 1, 1: 1, 2: 1, 3: 2, 4: 1, 5: 1}),
        "task": Counter({0: 1, 3: 1, 4: 1}),
        "queue": Counter({0: 1, 4: 1}),
    }
    decided = {0: 110, 1: 210, 2: 310, 3: 410, 4: 510, 5: 610}
    accounted = account(produced, counts, decided, [("t0", 180, 190, "closed")], {})
    assert accounted["prediction_once"] == 5
    assert accounted["no_prediction_objected"] == 1
    assert accounted["no_prediction_lost"] == 0
    assert accounted["prediction_more_than_once"] == 1
    assert accounted["no_task_after_reached_outcome"] == 1  # event 1: cooling down
    assert accounted["no_task_unexplained"] == 2  # events 2 and 5
    assert accounted["task_not_on_queue"] == 1  # event 3
    assert accounted["tombstones_by_reason"] == {"closed": 1}


def test_targets_compare_the_last_five_minutes_with_the_first_and_rss_after_minute_five() -> None:
    start = 0
    produced = Produced(start_ms=start)
    first: dict[int, tuple[int, int]] = {}
    for minute in range(10):  # 100 events a minute; the last five minutes twice as slow
        for n in range(100):
            index = minute * 100 + n
            produced.event_ms[index] = minute * 60_000 + n * 600
            first[index] = (produced.event_ms[index] + (100 if minute < 5 else 200), 0)
    samples = [sample(at, 0, 0, 100 if at <= 300 else 115) for at in range(0, 601, 60)]
    found = {
        t["target"].split(" (")[0].split(":")[0]: t
        for t in targets(first, produced, samples, 10, True)
    }

    assert found["p99 last 5 min / first 5 min"]["value"] == 2.0
    assert not found["p99 last 5 min / first 5 min"]["ok"]
    assert found["RSS queue_worker"]["value"] == 0.15 and not found["RSS queue_worker"]["ok"]
    assert found["RSS broker"]["value"] == 0.15
    assert found["nothing lost or scored twice"]["ok"]
    assert targets(first, produced, samples, 9, True) == []  # too short to compare


def test_state_seconds_scale_the_queues_lifetimes_and_keep_the_settings_valid() -> None:
    scaled = Settings(_env_file=None, **lifetimes(60))
    assert scaled.task_ttl_days * 86_400 == pytest.approx(60)
    assert scaled.queue_forget_after_days == scaled.task_ttl_days
    assert lifetimes(None) == {}
