"""callqueue.view.QueueView without a broker: newest record per key, tombstones and their
reasons, ranking by score with deterministic ties, tier filter, unreadable records."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from callqueue.view import UNKNOWN_REASON, QueueView
from schemas import WITHDRAWAL_HEADER, CallTask, Priority, task_id_for

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def task(
    prospect: str,
    event: str,
    score: float,
    priority: Priority = "high",
    supersedes: str | None = None,
) -> CallTask:
    return CallTask(
        task_id=task_id_for(event),
        event_id=event,
        prospect_id=prospect,
        score=score,
        priority=priority,
        percentile=50.0,
        model_version=1,
        scored_at=NOW,
        expires_at=NOW + timedelta(days=14),
        supersedes=supersedes,
    )


def put(view: QueueView, t: CallTask) -> None:
    view.apply(t.prospect_id.encode(), t.model_dump_json().encode(), {})


def withdraw(view: QueueView, prospect: str, reason: str | None) -> None:
    headers = {} if reason is None else {WITHDRAWAL_HEADER: reason.encode()}
    view.apply(prospect.encode(), None, headers)


def test_the_newest_record_per_key_wins():
    view = QueueView()
    first = task("p1", "e0", 0.2, "low")
    second = task("p1", "e1", 0.9, "high", supersedes=first.task_id)
    put(view, first)
    put(view, second)
    put(view, task("p2", "e2", 0.5, "medium"))
    top = view.top(10)
    assert [t.task_id for t in top.tasks] == [second.task_id, task_id_for("e2")]
    assert top.tasks[0] == second, "the task comes back as it was written"
    assert top.open_by_tier == {"high": 1, "medium": 1, "low": 0}
    assert top.open_total == 2
    assert view.records_applied == 3


def test_a_tombstone_removes_the_task_and_counts_its_reason_once():
    view = QueueView()
    for i, reason in enumerate(["closed", "expired", "suppressed", "closed"]):
        put(view, task(f"p{i}", f"e{i}", 0.5))
        withdraw(view, f"p{i}", reason)
    withdraw(view, "p0", "closed")  # read twice (a batch sent again): nothing open to withdraw
    withdraw(view, "nobody", "expired")
    put(view, task("p9", "e9", 0.5))
    withdraw(view, "p9", None)
    assert view.top(10).tasks == []
    assert view.withdrawals() == {
        "closed": 2,
        "recycled": 0,
        "expired": 1,
        "suppressed": 1,
        UNKNOWN_REASON: 1,
    }
    assert view.open_by_tier() == {"high": 0, "medium": 0, "low": 0}


def test_a_prospect_can_be_queued_again_after_a_withdrawal():
    view = QueueView()
    put(view, task("p1", "e0", 0.4))
    withdraw(view, "p1", "expired")
    put(view, task("p1", "e1", 0.3, "low"))
    assert [t.event_id for t in view.top(5).tasks] == ["e1"]
    assert view.withdrawals()["expired"] == 1


def test_ranking_by_score_ties_by_task_id_and_limit():
    view = QueueView()
    scores = [0.1, 0.9, 0.5, 0.9, 0.7, 0.5, 0.3]
    tasks = [task(f"p{i}", f"e{i}", s, "medium") for i, s in enumerate(scores)]
    for t in random.Random(7).sample(tasks, len(tasks)):
        put(view, t)
    expected = sorted(tasks, key=lambda t: (-t.score, t.task_id))
    assert view.top(100).tasks == expected
    assert view.top(3).tasks == expected[:3]
    assert view.top(1).tasks == expected[:1]
    with pytest.raises(ValueError, match="at least 1"):
        view.top(0)


def test_tier_filter_and_a_task_moving_tiers():
    view = QueueView()
    put(view, task("p1", "e1", 0.95, "high"))
    put(view, task("p2", "e2", 0.60, "medium"))
    put(view, task("p3", "e3", 0.10, "low"))
    put(view, task("p2", "e4", 0.20, "low"))  # rescored: leaves medium
    assert [t.prospect_id for t in view.top(10, "low").tasks] == ["p2", "p3"]
    assert view.top(10, "medium").tasks == []
    assert [t.prospect_id for t in view.top(10, "high").tasks] == ["p1"]
    assert view.open_by_tier() == {"high": 1, "medium": 0, "low": 2}


def test_unreadable_records_change_nothing():
    view = QueueView()
    good = task("p1", "e1", 0.8)
    put(view, good)
    view.apply(b"p1", b"{not json", {})
    view.apply(b"p1", b'{"task_id": "x"}', {})
    view.apply(None, good.model_dump_json().encode(), {})
    view.apply(b"someone-else", good.model_dump_json().encode(), {})
    assert view.top(5).tasks == [good]
    assert view.unreadable == 4 and view.top(5).unreadable == 4
    assert view.records_applied == 5


def test_queries_while_another_thread_applies():
    view = QueueView()
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            put(view, task(f"p{i % 500}", f"e{i}", (i % 97) / 97, "high"))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            top = view.top(20)
            assert [t.score for t in top.tasks] == sorted(
                (t.score for t in top.tasks), reverse=True
            )
    finally:
        stop.set()
        thread.join()


OPEN_TASKS = 100_000


def test_a_query_over_many_open_tasks():
    """100,000 open tasks, the best 50 of all and of a tier (the times at 1,000,000 are measured
    in bench/README.md, "Call queue"; a test asserts no wall-clock time)."""
    view = QueueView()
    template = task("PROSPECT", "e", 0.5, "high").model_dump_json()
    tiers = ("high", "medium", "low")
    rng = random.Random(1)
    records = [
        (
            f"p{i}".encode(),
            template.replace("PROSPECT", f"p{i}")
            .replace(task_id_for("e"), f"t{i:07d}")
            .replace('"score":0.5', f'"score":{rng.random()}')
            .replace('"high"', f'"{tiers[i % 3]}"')
            .encode(),
        )
        for i in range(OPEN_TASKS)
    ]
    started = time.perf_counter()
    for key, value in records:
        view.apply(key, value, {})
    applied = time.perf_counter() - started
    started = time.perf_counter()
    top = view.top(50)
    everything = time.perf_counter() - started
    started = time.perf_counter()
    view.top(50, "high")
    one_tier = time.perf_counter() - started
    print(
        f"\n{OPEN_TASKS:,} records applied in {applied:.1f} s; top 50 of all: "
        f"{everything * 1000:.0f} ms, of one tier: {one_tier * 1000:.0f} ms"
    )
    assert top.open_total == OPEN_TASKS and view.unreadable == 0
    scores = [t.score for t in top.tasks]
    assert len(scores) == 50 and scores == sorted(scores, reverse=True)


def test_a_task_is_served_only_once_it_is_due():
    view = QueueView()
    later = task("p1", "e1", 0.9).model_copy(update={"not_before": NOW + timedelta(hours=4)})
    put(view, later)
    put(view, task("p2", "e2", 0.5))

    before = view.top(10, now=NOW.timestamp())
    assert [t.prospect_id for t in before.tasks] == ["p2"]
    assert (before.open_total, before.not_due) == (2, 1)
    after = view.top(10, now=(NOW + timedelta(hours=4)).timestamp())
    assert [t.prospect_id for t in after.tasks] == ["p1", "p2"]
    assert after.not_due == 0
