"""The call queue's rules without a broker: callqueue.rules.PartitionQueue against the table in
docs/architecture.md ("The call queue"), row by row and against testkit.queue_reference on random
mixed streams; and the queue's inputs (callqueue.inputs)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from callqueue.inputs import (
    KIND_HEADER,
    InputKind,
    InvalidInput,
    QueueInput,
    decode_input,
    input_record,
    partition_for,
)
from callqueue.rules import (
    PartitionQueue,
    QueueAccountingError,
    QueueCounts,
    QueuePolicy,
    QueueResult,
    QueueTopics,
    retry_event_id,
)
from callqueue.state import ProspectEntry, entry_from_json
from core.topic_writer import Outgoing
from schemas import (
    DISPOSITIONS,
    FEATURES,
    PRIORITIES,
    RECYCLED,
    CallOutcome,
    CallTask,
    Claim,
    Disposition,
    DoNotCallEntry,
    PredictionRecord,
    Priority,
    ProspectEvent,
    Recycled,
    task_id_for,
)
from testkit.factories import valid_event
from testkit.queue_reference import (
    Lift,
    OpenTask,
    ReferenceInput,
    Withdrawn,
    queue_state_of,
    reference_input,
    reference_queue,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(days=14)
RECONTACT = timedelta(days=30)
MAX_ATTEMPTS = 3
FLOOR = 0.2
RETRY_AFTER: dict[Recycled, timedelta] = {
    "no_answer": timedelta(hours=4),
    "busy": timedelta(minutes=30),
    "voicemail": timedelta(days=1),
}
POLICY = QueuePolicy(TTL, RECONTACT, MAX_ATTEMPTS, FLOOR, RETRY_AFTER)
TOPICS = QueueTopics(
    predictions="predictions",
    tasks={p: f"call-tasks.{p}" for p in PRIORITIES},
    queue="call-queue",
    state="call-queue.state",
    prospects="prospects",
)
INPUTS_TOPIC = "call-queue.inputs"
PARTITIONS = 6
PARTITION = 3  # the partition the queue under test owns
FEATURE_VALUES = {name: valid_event()[name] for name in FEATURES}


# --- inputs -------------------------------------------------------------------------------
def event(
    event_id: str,
    prospect_id: str = "p1",
    at: timedelta = timedelta(0),
    score: float = 0.5,
    priority: Priority = "medium",
    *,
    campaign: int = 1,
    retry_of: str | None = None,
    retry_reason: Recycled | None = None,
    not_before: datetime | None = None,
) -> PredictionRecord:
    return PredictionRecord(
        event_id=event_id,
        task_id=task_id_for(event_id),
        prospect_id=prospect_id,
        occurred_at=BASE + at,
        features={**FEATURE_VALUES, "campaign": campaign},
        score=score,
        priority=priority,
        percentile=50.0,
        model_version=1,
        scored_at=BASE,
        not_before=not_before,
        retry_of=retry_of,
        retry_reason=retry_reason,
    )


def outcome(
    prospect_id: str = "p1",
    *,
    task_of: str | None = None,
    event_id: str | None = None,
    at: timedelta = timedelta(0),
    disposition: Disposition = "reached",
    callback_at: datetime | None = None,
) -> CallOutcome:
    """An outcome naming the task of event `task_of`, or the event `event_id`."""
    reached = {"subscribed": False, "duration_seconds": 60} if disposition == "reached" else {}
    return CallOutcome(
        task_id=None if task_of is None else task_id_for(task_of),
        event_id=event_id,
        prospect_id=prospect_id,
        called_at=BASE + at,
        disposition=disposition,
        callback_at=callback_at,
        **reached,  # type: ignore[arg-type]
    )


def objection(prospect_id: str = "p1") -> DoNotCallEntry:
    return DoNotCallEntry(prospect_id=prospect_id, requested_at=BASE, source="lista-robinson")


def encoded(item: ReferenceInput) -> tuple[InputKind, bytes | None]:
    if isinstance(item, PredictionRecord):
        return "scored", item.model_dump_json().encode()
    if isinstance(item, CallOutcome):
        return "outcome", item.model_dump_json().encode()
    if isinstance(item, DoNotCallEntry):
        return "do_not_call", item.model_dump_json().encode()
    return "do_not_call", None


OFFSETS = itertools.count()  # of the input topic: increasing across a test, as a partition's


def through_topic(
    kind: InputKind, prospect_id: str, value: bytes | None, offset: int | None = None
) -> QueueInput:
    """The input as the queue worker gets it: written by `input_record`, read by `decode_input`,
    at the next offset unless told."""
    offset = next(OFFSETS) if offset is None else offset
    record = input_record(INPUTS_TOPIC, kind, prospect_id, value, PARTITIONS)
    assert record.key is not None and record.partition is not None
    return decode_input(
        record.key, record.value, dict(record.headers)[KIND_HEADER], record.partition, offset
    )


def as_inputs(items: Sequence[ReferenceInput]) -> list[QueueInput]:
    inputs = []
    for item in items:
        kind, value = encoded(item)
        inputs.append(through_topic(kind, item.prospect_id, value))
    return inputs


def new_queue(entries: Sequence[ProspectEntry] = ()) -> PartitionQueue:
    return PartitionQueue(PARTITION, TOPICS, POLICY, entries)


def apply(queue: PartitionQueue, *items: ReferenceInput) -> QueueResult:
    return queue.apply(as_inputs(items))


# --- what was published -------------------------------------------------------------------
def on(result: QueueResult, topic: str) -> list[Outgoing]:
    return [r for r in result.outgoing if r.topic == topic]


def tasks_on(result: QueueResult, topic: str) -> list[CallTask]:
    return [CallTask.model_validate_json(r.value) for r in on(result, topic) if r.value]


def but_state(result: QueueResult) -> list[Outgoing]:
    return [r for r in result.outgoing if r.topic != TOPICS.state]


def tombstone(prospect_id: str, event_id: str, reason: str) -> Outgoing:
    headers = [("task_id", task_id_for(event_id).encode()), ("withdrawn", reason.encode())]
    return Outgoing(TOPICS.queue, prospect_id.encode(), None, headers, partition=PARTITION)


def counts_of(counts: QueueCounts) -> Counter[str]:
    """QueueCounts in the reference model's shape."""
    names = (
        "queued superseded late cooling_down suppressed duplicate below_floor closed exhausted "
        "recycled stale do_not_call lifted claims_granted claims_refused"
    )
    flat = Counter({name: getattr(counts, name) for name in names.split()})
    flat.update({f"withdrawn.{reason}": n for reason, n in counts.withdrawn.items()})
    return +flat


def queue_view(records: Sequence[Outgoing]) -> dict[str, OpenTask | Withdrawn]:
    return queue_state_of((r.key, r.value, r.headers) for r in records if r.topic == TOPICS.queue)


def changelog_of(records: Sequence[Outgoing]) -> list[ProspectEntry]:
    """The newest state record per key, as a replica taking the partition over reads them."""
    newest = {r.key: r.value for r in records if r.topic == TOPICS.state}
    return [entry_from_json(v) for v in newest.values() if v is not None]


# --- one rule at a time -------------------------------------------------------------------
def test_a_new_event_is_queued_on_its_tier_and_on_the_queue_with_its_expiry() -> None:
    result = apply(new_queue(), event("e1", at=timedelta(days=2), score=0.8, priority="high"))

    assert counts_of(result.counts) == Counter(queued=1)
    (task,) = tasks_on(result, TOPICS.tasks["high"])
    assert task.task_id == task_id_for("e1") and task.score == 0.8
    assert task.expires_at == BASE + timedelta(days=2) + TTL
    assert task.supersedes is None
    assert tasks_on(result, TOPICS.queue) == [task]
    assert result.entries["p1"].open_task == task


def test_a_newer_event_supersedes_the_open_task_and_names_it() -> None:
    queue = new_queue()
    apply(queue, event("e1", priority="high"))
    result = apply(queue, event("e2", at=timedelta(hours=1), priority="low"))

    assert counts_of(result.counts) == Counter(queued=1, superseded=1)
    (task,) = tasks_on(result, TOPICS.tasks["low"])
    assert task.supersedes == task_id_for("e1")
    assert tasks_on(result, TOPICS.queue) == [task]
    assert on(result, TOPICS.tasks["high"]) == []


def test_an_event_of_a_do_not_call_prospect_publishes_nothing_not_even_its_log_line() -> None:
    queue = new_queue()
    apply(queue, objection())
    result = apply(queue, event("e1"))

    assert counts_of(result.counts) == Counter(suppressed=1)
    assert but_state(result) == []


def test_a_redelivered_event_publishes_the_same_records_again() -> None:
    queue = new_queue()
    first = apply(queue, event("e1"))
    again = apply(queue, event("e1"))

    assert counts_of(again.counts) == Counter(duplicate=1)
    assert but_state(again) == but_state(first)
    assert again.entries == {}  # nothing changed: no state record


def test_a_redelivered_event_never_reopens_a_closed_task() -> None:
    queue = new_queue()
    apply(queue, event("e1"), outcome(task_of="e1"))
    again = apply(queue, event("e1"))

    assert counts_of(again.counts) == Counter(duplicate=1)
    assert [r.topic for r in again.outgoing] == [TOPICS.predictions]


def test_a_redelivered_event_of_a_do_not_call_prospect_is_suppressed() -> None:
    queue = new_queue()
    apply(queue, event("e1"), objection())
    again = apply(queue, event("e1"))

    assert counts_of(again.counts) == Counter(suppressed=1)
    assert but_state(again) == []


def test_an_event_not_newer_than_the_newest_queued_one_is_only_logged() -> None:
    queue = new_queue()
    apply(queue, event("e1", at=timedelta(days=5)))
    older = apply(queue, event("e0", at=timedelta(days=4)))
    same_time = apply(queue, event("e0b", at=timedelta(days=5)))

    for result in (older, same_time):
        assert counts_of(result.counts) == Counter(late=1)
        assert [r.topic for r in result.outgoing] == [TOPICS.predictions]
    assert queue.entries["p1"].open_task is not None
    assert queue.entries["p1"].open_task.task_id == task_id_for("e1")


def test_a_late_event_never_reopens_a_prospect_that_was_called() -> None:
    queue = new_queue()
    apply(queue, event("e1", at=timedelta(days=5)), outcome(task_of="e1", at=timedelta(days=6)))
    result = apply(queue, event("e0", at=timedelta(days=4)))

    assert counts_of(result.counts) == Counter(late=1)
    assert queue.entries["p1"].open_task is None


def test_after_a_call_newer_events_cool_down_for_recontact_after_in_event_time() -> None:
    queue = new_queue()
    apply(queue, event("e1"), outcome(task_of="e1", at=timedelta(days=1)))
    cooling = apply(queue, event("e2", at=timedelta(days=31) - timedelta(seconds=1)))
    queued = apply(queue, event("e3", at=timedelta(days=31)))

    assert counts_of(cooling.counts) == Counter(cooling_down=1)
    assert [r.topic for r in but_state(cooling)] == [TOPICS.predictions]
    assert counts_of(queued.counts) == Counter(queued=1)
    assert [t.supersedes for t in tasks_on(queued, TOPICS.queue)] == [None]


def test_an_outcome_naming_the_open_task_closes_it_by_task_id_or_by_event_id() -> None:
    queue = new_queue()
    apply(queue, event("e1"), event("e2", "p2"))
    by_task = apply(queue, outcome("p1", task_of="e1"))
    by_event = apply(queue, outcome("p2", event_id="e2"))

    assert but_state(by_task) == [tombstone("p1", "e1", "closed")]
    assert but_state(by_event) == [tombstone("p2", "e2", "closed")]
    for result in (by_task, by_event):
        assert counts_of(result.counts) == Counter({"closed": 1, "withdrawn.closed": 1})
    assert queue.open_tasks() == []


def test_an_outcome_for_a_superseded_task_closes_nothing_newer_and_starts_no_cool_down() -> None:
    queue = new_queue()
    apply(queue, event("e1"), event("e2", at=timedelta(days=1)))
    stale = apply(queue, outcome(task_of="e1", at=timedelta(days=2)))
    unknown = apply(queue, outcome(event_id="never-scored"))
    later = apply(queue, event("e3", at=timedelta(days=3)))

    for result in (stale, unknown):
        assert counts_of(result.counts) == Counter(stale=1)
        assert result.outgoing == []
    assert counts_of(later.counts) == Counter(queued=1, superseded=1)
    assert [t.supersedes for t in tasks_on(later, TOPICS.queue)] == [task_id_for("e2")]


def test_a_do_not_call_entry_withdraws_the_open_task_and_suppresses_later_events() -> None:
    queue = new_queue()
    apply(queue, event("e1"))
    withdrawn = apply(queue, objection())
    later = apply(queue, event("e2", at=timedelta(days=1)), outcome(task_of="e1"))

    assert but_state(withdrawn) == [tombstone("p1", "e1", "suppressed")]
    assert counts_of(withdrawn.counts) == Counter({"do_not_call": 1, "withdrawn.suppressed": 1})
    assert counts_of(later.counts) == Counter(suppressed=1, stale=1)
    assert but_state(later) == []


def test_a_do_not_call_entry_without_an_open_task_publishes_no_queue_record() -> None:
    result = apply(new_queue(), objection())

    assert counts_of(result.counts) == Counter(do_not_call=1)
    assert but_state(result) == []
    assert result.entries["p1"].do_not_call


def test_a_lifted_entry_lets_later_events_queue_again() -> None:
    queue = new_queue()
    apply(queue, objection(), event("e1"))
    lifted = apply(queue, Lift("p1"))
    later = apply(queue, event("e2", at=timedelta(days=1)))

    assert counts_of(lifted.counts) == Counter(lifted=1)
    assert but_state(lifted) == []
    assert counts_of(later.counts) == Counter(queued=1)


def test_a_task_expires_when_the_partitions_stream_time_reaches_it() -> None:
    queue = new_queue()
    apply(queue, event("e1", "p1"))
    before = apply(queue, event("e2", "p2", at=TTL - timedelta(seconds=1)))
    reached = apply(queue, event("e3", "p3", at=TTL))

    assert on(before, TOPICS.queue)[0].key == b"p2"  # only p2's own task
    assert on(reached, TOPICS.queue)[0] == tombstone("p1", "e1", "expired")
    assert reached.counts.withdrawn == Counter(expired=1)
    assert reached.stream_time == BASE + TTL
    assert sorted(t.prospect_id for t in queue.open_tasks()) == ["p2", "p3"]


def test_a_late_or_suppressed_event_moves_the_stream_time_too() -> None:
    queue = new_queue()
    apply(queue, event("e1", "p1"), event("e2", "p2", at=timedelta(days=10)), objection("p3"))
    late = apply(queue, event("e0", "p2", at=timedelta(days=9)))
    suppressed = apply(queue, event("e3", "p3", at=TTL))

    assert late.stream_time == BASE + timedelta(days=10)
    assert but_state(suppressed) == [tombstone("p1", "e1", "expired")]


def test_an_event_after_its_prospects_task_expired_queues_a_task_that_supersedes_nothing() -> None:
    queue = new_queue()
    apply(queue, event("e1"))
    result = apply(queue, event("e2", at=TTL))

    assert on(result, TOPICS.queue)[0] == tombstone("p1", "e1", "expired")
    assert [t.supersedes for t in tasks_on(result, TOPICS.queue)] == [None]
    assert counts_of(result.counts) == Counter({"queued": 1, "withdrawn.expired": 1})


def test_a_task_queued_for_an_event_a_ttl_older_than_the_stream_time_is_withdrawn_at_once() -> None:
    queue = new_queue()
    apply(queue, event("e1", "p1", at=TTL))
    result = apply(queue, event("e2", "p2"))  # its expiry is the stream time already

    assert on(result, TOPICS.queue)[1:] == [tombstone("p2", "e2", "expired")]
    assert len(on(result, TOPICS.tasks["medium"])) == 1  # the tier topics get every new task
    assert counts_of(result.counts) == Counter({"queued": 1, "withdrawn.expired": 1})
    assert [t.prospect_id for t in queue.open_tasks()] == ["p1"]


def test_an_outcome_for_an_expired_task_is_stale() -> None:
    queue = new_queue()
    apply(queue, event("e1"), event("e2", "p2", at=TTL))
    result = apply(queue, outcome(task_of="e1", at=TTL))

    assert counts_of(result.counts) == Counter(stale=1)


EXPIRY_STREAM: list[ReferenceInput] = [
    event("e1", "p1"),
    event("e2", "p2", at=timedelta(days=3)),
    event("e3", "p1", at=timedelta(days=1)),
    event("e4", "p3", at=timedelta(days=15)),
    event("e5", "p2", at=timedelta(days=16)),
    event("e6", "p3", at=timedelta(days=40)),
]


@pytest.mark.parametrize("size", [1, 2, 4, len(EXPIRY_STREAM)])
def test_expiry_does_not_depend_on_how_inputs_are_batched(size: int) -> None:
    inputs = as_inputs(EXPIRY_STREAM)
    whole = new_queue()
    expected = whole.apply(inputs)
    queue = new_queue()
    results = [queue.apply(inputs[i : i + size]) for i in range(0, len(inputs), size)]

    assert [r for res in results for r in but_state(res)] == but_state(expected)
    assert queue.entries == whole.entries
    assert queue.stream_time == whole.stream_time == BASE + timedelta(days=40)
    assert queue_view(expected.outgoing) == {
        "p1": Withdrawn(task_id_for("e3"), "expired"),
        "p2": Withdrawn(task_id_for("e5"), "expired"),
        "p3": OpenTask(
            task_id_for("e6"),
            "e6",
            0.5,
            "medium",
            BASE + timedelta(days=40) + TTL,
            None,  # e4's task expired (day 29) before e6 arrived
        ),
    }


# --- the records ---------------------------------------------------------------------------
def test_the_records_of_a_queued_event_topics_keys_partitions_and_headers() -> None:
    record = event("e1", priority="high")
    # Formatted as no serializer of ours would: the log line must be these bytes, not re-encoded.
    value = json.dumps(json.loads(record.model_dump_json()), indent=2, sort_keys=True).encode()
    result = new_queue().apply([through_topic("scored", "p1", value)])

    log, tier, queued, state = result.outgoing
    headers = [("model_version", b"1"), ("task_id", task_id_for("e1").encode())]
    assert log == Outgoing(TOPICS.predictions, b"e1", value, headers)
    assert (tier.topic, tier.key, tier.headers, tier.partition) == (
        TOPICS.tasks["high"],
        b"p1",
        headers,
        None,  # the tier topics keep their producers' partitioning
    )
    assert queued == Outgoing(TOPICS.queue, b"p1", tier.value, headers, partition=PARTITION)
    assert tier.value is not None
    assert json.loads(tier.value)["expires_at"] is not None
    assert "supersedes" in json.loads(tier.value)
    assert (state.topic, state.key, state.partition) == (TOPICS.state, b"p1", PARTITION)
    assert state.value is not None
    assert entry_from_json(state.value) == result.entries["p1"]


def test_one_state_record_per_changed_entry_per_batch_with_its_final_value() -> None:
    queue = new_queue()
    result = apply(
        queue,
        event("e1", "p1"),
        event("e2", "p1", at=timedelta(hours=1)),
        event("e3", "p2"),
        outcome("p2", task_of="e3"),
        objection("p4"),
    )

    states = on(result, TOPICS.state)
    assert sorted(r.key for r in states if r.key) == [b"p1", b"p2", b"p4"]
    assert result.outgoing[-len(states) :] == states  # after the batch's other records
    for record in states:
        assert record.value is not None and record.key is not None
        entry = entry_from_json(record.value)
        assert entry == result.entries[record.key.decode()] == queue.entries[entry.prospect_id]
    assert queue.entries["p2"].open_task is None and queue.entries["p2"].reached_at == BASE


# --- accounting ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "counts, consumed",
    [
        (QueueCounts(scored=1), 1),  # scored but neither queued, late, cooling, ...
        (QueueCounts(scored=1, queued=1, late=1), 1),
        (QueueCounts(outcomes=1), 1),
        (QueueCounts(do_not_call_records=1), 1),
        (QueueCounts(scored=1, queued=1), 2),  # a consumed record no count holds
    ],
)
def test_an_inconsistent_count_is_refused(counts: QueueCounts, consumed: int) -> None:
    with pytest.raises(QueueAccountingError):
        counts.check(consumed)
    with pytest.raises(QueueAccountingError):
        QueueResult(consumed, {}, [], counts, None)


def test_consistent_counts_pass_the_check() -> None:
    counts = QueueCounts(scored=2, queued=1, duplicate=1, outcomes=1, stale=1)
    counts.do_not_call_records, counts.lifted = 1, 1
    counts.check(4)


# --- recovery ------------------------------------------------------------------------------
def test_a_queue_rebuilt_from_its_changelog_gives_the_same_later_results() -> None:
    queue = new_queue()
    published: list[Outgoing] = []
    batches: list[list[ReferenceInput]] = [
        [event("e1", "p1"), event("e2", "p2", at=timedelta(days=2))],
        [outcome("p2", task_of="e2", at=timedelta(days=2)), objection("p3")],
        [event("e3", "p3", at=timedelta(days=12))],  # suppressed, but it moves the stream time
    ]
    for batch in batches:
        published += apply(queue, *batch).outgoing
    rebuilt = new_queue(changelog_of(published))

    assert rebuilt.stream_time == queue.stream_time == BASE + timedelta(days=12)
    assert rebuilt.entries == queue.entries
    later: list[ReferenceInput] = [
        event("e4", "p2", at=timedelta(days=13)),  # cooling down
        event("e5", "p4", at=TTL),  # expires p1's task
        event("e2", "p2", at=timedelta(days=2)),  # redelivered after its task was closed
        Lift("p3"),
        event("e6", "p3", at=timedelta(days=15)),
    ]
    inputs = as_inputs(later)
    expected, got = queue.apply(inputs), rebuilt.apply(inputs)
    assert got.outgoing == expected.outgoing
    assert got.counts == expected.counts
    assert got.stream_time == expected.stream_time
    assert tombstone("p1", "e1", "expired") in got.outgoing


# --- dispositions: what a call that reached no decision does -------------------------------
def retries_of(result: QueueResult) -> list[ProspectEvent]:
    return [ProspectEvent.model_validate_json(r.value) for r in on(result, TOPICS.prospects)]


@pytest.mark.parametrize("disposition", ["no_answer", "busy", "voicemail"])
def test_a_call_without_a_decision_sends_the_event_back_one_attempt_later(
    disposition: Recycled,
) -> None:
    queue = new_queue()
    apply(queue, event("e1", at=timedelta(days=3), campaign=1))
    called = timedelta(days=3, hours=2)
    result = apply(queue, outcome(task_of="e1", at=called, disposition=disposition))

    assert counts_of(result.counts) == Counter({"recycled": 1, "withdrawn.recycled": 1})
    assert tombstone("p1", "e1", "recycled") in result.outgoing
    (retry,) = retries_of(result)
    due = BASE + called + RETRY_AFTER[disposition]
    expected_features = {**FEATURE_VALUES, "campaign": 2, "day": due.day, "month": "jan"}
    assert retry.features() == expected_features  # pdays and previous: previous campaigns
    assert retry.event_id == retry_event_id(task_id_for("e1"))
    assert (retry.occurred_at, retry.not_before) == (BASE + called, due)
    assert (retry.retry_of, retry.retry_reason) == (task_id_for("e1"), disposition)
    assert result.entries["p1"].reached_at is None  # nobody was reached: no cooling down


def test_the_rescored_retry_is_queued_with_its_attempt_and_not_before() -> None:
    queue = new_queue()
    apply(queue, event("e1", campaign=1))
    (retry,) = retries_of(
        apply(queue, outcome(task_of="e1", at=timedelta(hours=1), disposition="busy"))
    )
    scored = event(
        retry.event_id,
        at=retry.occurred_at - BASE,
        score=0.4,
        campaign=retry.campaign,
        retry_of=retry.retry_of,
        retry_reason=retry.retry_reason,
        not_before=retry.not_before,
    )
    result = apply(queue, scored)

    assert counts_of(result.counts) == Counter(queued=1)
    (task,) = tasks_on(result, TOPICS.queue)
    assert (task.attempt, task.retry_of, task.not_before) == (
        2,
        task_id_for("e1"),
        retry.not_before,
    )
    assert task.expires_at == retry.not_before + TTL
    assert counts_of(apply(queue, scored).counts) == Counter(duplicate=1)  # redelivered


@pytest.mark.parametrize(
    "reason, score, queued",
    [("no_answer", FLOOR - 0.01, False), ("no_answer", FLOOR, True), ("callback", 0.01, True)],
)
def test_a_retry_under_the_floor_is_only_logged_but_a_callback_always_comes_back(
    reason: Recycled, score: float, queued: bool
) -> None:
    queue = new_queue()
    result = apply(queue, event("r1", score=score, campaign=2, retry_of="t0", retry_reason=reason))

    assert counts_of(result.counts) == (Counter(queued=1) if queued else Counter(below_floor=1))
    if not queued:
        assert [r.topic for r in but_state(result)] == [TOPICS.predictions]


def test_a_callback_comes_back_at_the_time_the_prospect_asked_for() -> None:
    queue = new_queue()
    apply(queue, event("e1"))
    asked = BASE + timedelta(days=2, hours=15)
    result = apply(
        queue,
        outcome(task_of="e1", at=timedelta(hours=1), disposition="callback", callback_at=asked),
    )

    (retry,) = retries_of(result)
    assert (retry.not_before, retry.retry_reason, retry.day) == (asked, "callback", asked.day)


def test_no_decision_at_the_last_attempt_closes_the_task() -> None:
    queue = new_queue()
    apply(queue, event("e1", campaign=MAX_ATTEMPTS))
    result = apply(queue, outcome(task_of="e1", disposition="no_answer"))

    assert counts_of(result.counts) == Counter({"closed": 1, "exhausted": 1, "withdrawn.closed": 1})
    assert retries_of(result) == []


def test_a_wrong_number_closes_the_task_without_a_cooling_down() -> None:
    queue = new_queue()
    apply(queue, event("e1"), outcome(task_of="e1", disposition="wrong_number"))
    result = apply(queue, event("e2", at=timedelta(days=1)))

    assert counts_of(result.counts) == Counter(queued=1)


def test_a_do_not_call_disposition_suppresses_the_prospect_at_once() -> None:
    queue = new_queue()
    apply(queue, event("e1"))
    result = apply(queue, outcome(task_of="e1", disposition="do_not_call"))

    assert counts_of(result.counts) == Counter({"closed": 1, "withdrawn.suppressed": 1})
    assert tombstone("p1", "e1", "suppressed") in result.outgoing
    assert counts_of(apply(queue, event("e2", at=timedelta(days=40))).counts) == Counter(
        suppressed=1
    )


def test_a_do_not_call_disposition_naming_an_old_task_still_withdraws_the_open_one() -> None:
    queue = new_queue()
    apply(queue, event("e1"), event("e2", at=timedelta(hours=1)))
    result = apply(queue, outcome(task_of="e1", disposition="do_not_call"))

    assert counts_of(result.counts) == Counter({"stale": 1, "withdrawn.suppressed": 1})


def test_a_redelivered_recyclable_outcome_sends_no_second_retry() -> None:
    queue = new_queue()
    apply(queue, event("e1"), outcome(task_of="e1", disposition="no_answer"))
    again = apply(queue, outcome(task_of="e1", disposition="no_answer"))

    assert counts_of(again.counts) == Counter(stale=1)
    assert retries_of(again) == []


# --- claims: one agent at a time holds a prospect ----------------------------------------------
LEASE = timedelta(minutes=15)


def claim(
    event_id: str, agent: str, at: timedelta = timedelta(0), prospect_id: str = "p1"
) -> Claim:
    return Claim(
        claim_id=f"{agent}-{event_id}-{at.total_seconds():g}",
        prospect_id=prospect_id,
        task_id=task_id_for(event_id),
        agent=agent,
        requested_at=BASE + at,
        lease_until=BASE + at + LEASE,
    )


def apply_claim(queue: PartitionQueue, item: Claim) -> QueueResult:
    value = item.model_dump_json().encode()
    return queue.apply([through_topic("claim", item.prospect_id, value)])


def test_a_claim_on_the_open_task_is_granted_and_shown_on_the_queue_only() -> None:
    queue = new_queue()
    apply(queue, event("e1"))
    result = apply_claim(queue, claim("e1", "ana"))

    assert counts_of(result.counts) == Counter(claims_granted=1)
    (task,) = tasks_on(result, TOPICS.queue)
    assert (task.claimed_by, task.lease_until) == ("ana", BASE + LEASE)
    assert all(r.topic in (TOPICS.queue, TOPICS.state) for r in result.outgoing)
    again = apply_claim(queue, claim("e1", "ana"))  # redelivered: the same record again
    assert counts_of(again.counts) == Counter(claims_granted=1)
    assert tasks_on(again, TOPICS.queue) == [task]


def test_a_held_prospect_is_refused_to_another_agent_until_the_lease_runs_out() -> None:
    queue = new_queue()
    apply(queue, event("e1"))
    apply_claim(queue, claim("e1", "ana"))

    refused = apply_claim(queue, claim("e1", "ben", at=LEASE - timedelta(seconds=1)))
    assert counts_of(refused.counts) == Counter(claims_refused=1)
    assert but_state(refused) == []
    granted = apply_claim(queue, claim("e1", "ben", at=LEASE))
    assert tasks_on(granted, TOPICS.queue)[0].claimed_by == "ben"


def test_a_claim_carries_over_to_the_task_that_supersedes_the_claimed_one() -> None:
    queue = new_queue()
    apply(queue, event("e1"))
    apply_claim(queue, claim("e1", "ana"))
    newer = apply(queue, event("e2", at=timedelta(minutes=1)))

    (task,) = tasks_on(newer, TOPICS.queue)
    assert (task.task_id, task.claimed_by) == (task_id_for("e2"), "ana")
    refused = apply_claim(queue, claim("e2", "ben", at=timedelta(minutes=2)))
    assert counts_of(refused.counts) == Counter(claims_refused=1)


def test_claims_on_no_task_another_task_or_one_not_due_are_refused() -> None:
    queue = new_queue()
    assert counts_of(apply_claim(queue, claim("e1", "ana")).counts) == Counter(claims_refused=1)
    later = BASE + timedelta(hours=4)
    apply(queue, event("e1", not_before=later))
    assert counts_of(apply_claim(queue, claim("e0", "ana")).counts) == Counter(claims_refused=1)
    not_due = apply_claim(queue, claim("e1", "ana", at=timedelta(hours=3)))
    assert counts_of(not_due.counts) == Counter(claims_refused=1)
    due = apply_claim(queue, claim("e1", "ana", at=timedelta(hours=4)))
    assert counts_of(due.counts) == Counter(claims_granted=1)


def test_the_outcome_ends_the_claim() -> None:
    queue = new_queue()
    apply(queue, event("e1"))
    apply_claim(queue, claim("e1", "ana"))
    apply(queue, outcome(task_of="e1", disposition="no_answer"))
    (retry,) = [e for e in queue.entries.values()]
    assert retry.open_task is None  # recycled: the retry comes back unclaimed, as a new task


# --- against the reference model -----------------------------------------------------------
PROSPECTS = ("p0", "p1", "p2")
HALF_DAY = timedelta(hours=12)  # whole half days: TTL and recontact boundaries are hit exactly
KINDS = ("event", "event", "event", "redelivery", "outcome", "outcome", "do_not_call", "lift")


# One step of a stream: (prospect, kind, event time in half days, a choice, priority, by task id)
STEPS = st.tuples(
    st.sampled_from(PROSPECTS),
    st.sampled_from(KINDS),
    st.integers(0, 60),
    st.integers(0, 10_000),
    st.sampled_from(PRIORITIES),
    st.booleans(),
)


def stream_of(steps: Sequence[tuple[str, str, int, int, Priority, bool]]) -> list[ReferenceInput]:
    """Events (with late ones), redeliveries, outcomes naming the prospect's newest, an older or
    an unknown task, do-not-call entries and lifts."""
    items: list[ReferenceInput] = []
    events: dict[str, list[PredictionRecord]] = {p: [] for p in PROSPECTS}
    for n, (pid, kind, half_days, choice, priority, by_task) in enumerate(steps):
        mine = events[pid]
        if kind == "event" or (not mine and kind in ("redelivery", "outcome")):
            # From 10 days before the prospect's newest event to 20 days after: mostly newer.
            last = mine[-1].occurred_at - BASE if mine else timedelta(0)
            at = last + HALF_DAY * (half_days - 20)
            # Attempts 1 to 4 (the limit is 3); one event in 4 a retry, scored under or over
            # the floor, a callback whatever its score.
            retry = choice % 4 == 0
            record = event(
                f"{pid}-e{n}",
                pid,
                at,
                choice / 10_000,
                priority,
                campaign=1 + choice % 4,
                retry_of="earlier-task" if retry else None,
                retry_reason=RECYCLED[choice // 4 % len(RECYCLED)] if retry else None,
            )
            mine.append(record)
            items.append(record)
        elif kind == "redelivery":
            items.append(mine[choice % len(mine)])
        elif kind == "outcome":
            named = [mine[-1], mine[choice // 3 % len(mine)], None][choice % 3]
            called = (named.occurred_at if named else BASE) + HALF_DAY * (choice % 21)
            task_id = named.task_id if named else "unknown"
            event_id = named.event_id if named else "unknown"
            # Half the outcomes reached the prospect, the others end in every other way.
            disposition = DISPOSITIONS[0 if choice % 2 else choice // 2 % len(DISPOSITIONS)]
            reached = {"subscribed": by_task, "duration_seconds": 30}
            items.append(
                CallOutcome(
                    task_id=task_id if by_task else None,
                    event_id=None if by_task else event_id,
                    prospect_id=pid,
                    called_at=called,
                    disposition=disposition,
                    callback_at=called + HALF_DAY if disposition == "callback" else None,
                    **(reached if disposition == "reached" else {}),  # type: ignore[arg-type]
                )
            )
        elif kind == "do_not_call":
            items.append(objection(pid))
        else:
            items.append(Lift(pid))
    return items


mixed_streams = st.lists(STEPS, min_size=8, max_size=40).map(stream_of)


FORGET = timedelta(days=15)  # just past the TTL: forgetting happens often in a random stream
FORGETTING = QueuePolicy(TTL, RECONTACT, MAX_ATTEMPTS, FLOOR, RETRY_AFTER, FORGET)


@pytest.mark.parametrize("policy", [POLICY, FORGETTING], ids=["keeps", "forgets"])
@hypothesis_settings(max_examples=200, deadline=None, database=None)
@given(data=st.data())
def test_any_mixed_stream_in_any_batches_ends_as_the_reference_model(
    policy: QueuePolicy, data: st.DataObject
) -> None:
    """Whatever the batches and takeovers, the records and counts of the reference model, also
    when the next owner applies the last batch again (its commit failed): then it changes
    nothing and sends no retry again, whatever came before in that batch (an outcome before its
    event was stale the first time and must not close the event's task the second). A queue
    that forgets closed prospects too (the reference forgets nothing, and the changelog's
    tombstones make the next owner forget them as well)."""
    items = data.draw(mixed_streams, label="inputs")
    inputs = as_inputs(items)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(inputs)), max_size=5), label="cuts")))
    bounds = [0, *cuts, len(inputs)]
    batches = len(bounds) - 1
    restarts = data.draw(st.lists(st.sampled_from(["no", "takeover", "again"]), min_size=batches,
                                  max_size=batches), label="restarts")  # fmt: skip

    queue = PartitionQueue(PARTITION, TOPICS, policy)
    published: list[Outgoing] = []
    counts: Counter[str] = Counter()
    for (start, end), restart in zip(pairwise(bounds), restarts, strict=True):
        result = queue.apply(inputs[start:end])
        published += result.outgoing
        counts += counts_of(result.counts)
        if restart != "no":  # a replica taking the partition over
            queue = PartitionQueue(PARTITION, TOPICS, policy, changelog_of(published))
        if restart == "again":  # from the last commit: the batch once more
            again = queue.apply(inputs[start:end])
            assert not again.entries and not on(again, TOPICS.prospects)
            published += again.outgoing

    expected = reference_queue(
        items, TTL, RECONTACT, MAX_ATTEMPTS, FLOOR, forget_after=policy.forget_after
    )
    assert queue_view(published) == expected.final
    assert counts == expected.counts
    retried = [dict(r.headers)["retry_of"].decode() for r in published if r.topic == "prospects"]
    assert retried == expected.retried
    assert queue.stream_time == expected.stream_time
    assert {t.prospect_id: t.task_id for t in queue.open_tasks()} == {
        p: s.task_id for p, s in expected.final.items() if isinstance(s, OpenTask)
    }
    assert set(queue.entries) == {e.prospect_id for e in changelog_of(published)}


def forgetting_queue() -> PartitionQueue:
    return PartitionQueue(PARTITION, TOPICS, FORGETTING)


def state_on(result: QueueResult) -> dict[str, bytes | None]:
    return {r.key.decode(): r.value for r in on(result, TOPICS.state) if r.key is not None}


def test_a_closed_prospect_is_forgotten_once_the_stream_time_passes_its_horizon() -> None:
    queue = forgetting_queue()
    apply(queue, event("e1", "p1"), outcome("p1", task_of="e1", disposition="wrong_number"))
    assert "p1" in queue.entries

    kept = apply(queue, event("e2", "p2", at=FORGET))  # not past it yet
    assert "p1" in queue.entries and kept.counts.forgotten == 0

    passed = apply(queue, event("e3", "p2", at=FORGET + timedelta(seconds=1)))
    assert "p1" not in queue.entries
    assert passed.forgotten == ["p1"] and passed.counts.forgotten == 1
    assert state_on(passed)["p1"] is None  # the changelog's tombstone: a takeover forgets it too
    assert counts_of(passed.counts) == Counter(queued=1, superseded=1)  # no input counted


def test_open_tasks_and_objections_are_never_forgotten() -> None:
    queue = forgetting_queue()
    apply(queue, event("e1", "p1", not_before=BASE + 10 * FORGET), objection("p2"))
    apply(queue, event("e2", "p3", at=5 * FORGET))
    assert {"p1", "p2"} <= set(queue.entries)
    assert queue.entries["p1"].open_task is not None and queue.entries["p2"].do_not_call


def test_a_reached_prospect_is_kept_through_its_cooling_down_and_the_horizon() -> None:
    queue = forgetting_queue()
    apply(queue, event("e1", "p1"), outcome("p1", task_of="e1"))  # reached at BASE
    apply(queue, event("e2", "p2", at=RECONTACT + FORGET))
    assert "p1" in queue.entries  # an event after the horizon but in cooling-down: it decides
    apply(queue, event("e3", "p2", at=RECONTACT + FORGET + timedelta(seconds=1)))
    assert "p1" not in queue.entries


def test_an_event_older_than_the_stream_time_minus_the_horizon_is_late() -> None:
    queue = forgetting_queue()
    apply(queue, event("e1", "p1", at=2 * FORGET))
    result = apply(queue, event("e0", "p2", at=FORGET - timedelta(seconds=1)))

    assert counts_of(result.counts) == Counter(late=1)
    assert [r.topic for r in result.outgoing] == ["predictions"]  # its line, no task, no state
    assert "p2" not in queue.entries
    edge = apply(queue, event("e00", "p2", at=FORGET))  # exactly the horizon: still taken,
    assert counts_of(edge.counts) == Counter({"queued": 1, "withdrawn.expired": 1})  # dead


def test_a_forgotten_prospect_comes_back_as_a_new_one() -> None:
    queue = forgetting_queue()
    apply(queue, event("e1", "p1"), outcome("p1", task_of="e1", disposition="wrong_number"))
    apply(queue, event("e2", "p2", at=2 * FORGET))
    assert "p1" not in queue.entries
    back = apply(queue, event("e3", "p1", at=2 * FORGET))

    (task,) = tasks_on(back, TOPICS.queue)
    assert task.task_id == task_id_for("e3") and task.supersedes is None


def test_the_reference_model_reads_the_issues_two_prospect_sequence() -> None:
    """Issue 16's sequence: P1 rescored, its newest task called, then a late event for P1."""
    stream: list[ReferenceInput] = [
        event("e1", "P1", at=timedelta(hours=9), score=0.13, priority="low"),
        event("e2", "P1", at=timedelta(hours=10), score=0.725, priority="high"),
        event("e3", "P2", at=timedelta(hours=11)),
        outcome("P1", task_of="e2", at=timedelta(hours=12)),
        event("e0", "P1", at=-timedelta(days=1)),
    ]
    expected = {
        "P1": Withdrawn(task_id_for("e2"), "closed"),
        "P2": OpenTask(
            task_id_for("e3"), "e3", 0.5, "medium", BASE + timedelta(hours=11) + TTL, None
        ),
    }
    queue = new_queue()
    assert queue_view(apply(queue, *stream).outgoing) == expected
    assert reference_queue(stream, TTL, RECONTACT).final == expected


# --- inputs --------------------------------------------------------------------------------
ONE_OF_EACH: list[ReferenceInput] = [event("e1"), outcome(task_of="e1"), objection(), Lift("p1")]


@pytest.mark.parametrize("item", ONE_OF_EACH, ids=["scored", "outcome", "do_not_call", "lift"])
def test_every_kind_of_input_round_trips_through_the_input_topic(item: ReferenceInput) -> None:
    kind, value = encoded(item)
    decoded = through_topic(kind, "p1", value, offset=7)

    assert (decoded.kind, decoded.prospect_id, decoded.value, decoded.offset) == (
        kind,
        "p1",
        value,
        7,
    )
    assert decoded.partition == partition_for("p1", PARTITIONS)
    parsed = decoded.prediction or decoded.outcome or decoded.entry
    assert parsed == (None if isinstance(item, Lift) else item)
    assert reference_input(decoded) == item


def test_an_input_record_is_keyed_by_prospect_at_its_partition_with_its_kind() -> None:
    record = input_record(INPUTS_TOPIC, "outcome", "p1", b"{}", PARTITIONS)

    assert (record.topic, record.key, record.partition) == (
        INPUTS_TOPIC,
        b"p1",
        partition_for("p1", PARTITIONS),
    )
    assert record.headers == [(KIND_HEADER, b"outcome")]


def _value(item: ReferenceInput) -> bytes | None:
    return encoded(item)[1]


@pytest.mark.parametrize(
    "key, value, kind",
    [
        (b"p1", _value(event("e1")), b"scores"),  # an unknown kind
        (b"p1", _value(event("e1")), None),  # no kind header
        (None, _value(event("e1")), b"scored"),  # no key
        (b"p2", _value(event("e1")), b"scored"),  # keyed by another prospect
        (b"p2", _value(outcome(task_of="e1")), b"outcome"),
        (b"p2", _value(objection()), b"do_not_call"),
    ],
)
def test_an_input_no_scorer_wrote_is_refused(
    key: bytes | None, value: bytes | None, kind: bytes | None
) -> None:
    with pytest.raises(InvalidInput):
        decode_input(key, value, kind, 0, 0)


@pytest.mark.parametrize(
    "value, kind",
    [
        (b"{not json", b"scored"),
        (None, b"scored"),
        (b'{"prospect_id": "p1"}', b"outcome"),  # neither a task nor an event named
        (b'{"prospect_id": "p1"}', b"do_not_call"),  # no requested_at
    ],
)
def test_an_input_whose_value_is_not_its_contract_is_refused(
    value: bytes | None, kind: bytes
) -> None:
    with pytest.raises(ValidationError):
        decode_input(b"p1", value, kind, 0, 0)


@pytest.mark.parametrize("partitions", [1, 2, 3, 6, 12, 100])
def test_the_queue_partition_is_aiokafkas_default_partitioner(partitions: int) -> None:
    every = list(range(partitions))
    for key in ["p1", "cust-1", "prospect-000042", "ñandú", "", "x" * 128]:
        expected = DefaultPartitioner()(key.encode(), every, every)
        assert partition_for(key, partitions) == expected


# Kafka's own test vectors for Utils.murmur2 (clients/.../utils/UtilsTest.java, testMurmur2),
# as a Java producer computes them: signed 32-bit ints.
JAVA_MURMUR2 = {"21": -973932308, "foobar": -790332482, "abc": 479470107}


@pytest.mark.parametrize("key, java_hash", JAVA_MURMUR2.items())
@pytest.mark.parametrize("partitions", [6, 12, 7])
def test_the_queue_partition_is_the_one_a_java_client_picks(
    key: str, java_hash: int, partitions: int
) -> None:
    # Java: Utils.toPositive(Utils.murmur2(keyBytes)) % numPartitions
    assert partition_for(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions


def test_known_partitions_of_fixed_keys() -> None:
    assert [partition_for(k, 12) for k in JAVA_MURMUR2] == [0, 6, 3]
