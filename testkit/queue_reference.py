"""A reference model of the call queue's rules, written from the table in docs/architecture.md
("The call queue"), not from callqueue/rules.py: plain dicts and one loop, slow and obvious.

`reference_queue` replays the inputs of one partition in order and says what a dialer mirroring
`call-queue` ends up with per prospect: its open task, or the reason its last task was
withdrawn (a prospect that never had a task has no key). `reference_deployment` does the same
for a whole deployment, each partition with its own stream time. `queue_state_of` turns the
records read back from a `call-queue` topic into the same shape, so a test compares the two
key by key.

Where the table leaves an order open, the model reads it so: an event's time first moves the
stream time (what it reaches expires, so it is not superseded), then the event's own rule
applies, first row first (so a do-not-call prospect's redelivered event is suppressed); no task
is open past its expiry, not even one just queued for an event older than the stream time; a
redelivered event repeats its task only while that task is open (a replay never reopens a
prospect).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from callqueue.inputs import QueueInput, partition_for
from schemas import (
    WITHDRAWAL_HEADER,
    WITHDRAWALS,
    CallOutcome,
    CallTask,
    DoNotCallEntry,
    PredictionRecord,
    Priority,
    Withdrawal,
)


@dataclass(frozen=True)
class Lift:
    """A do-not-call tombstone: the prospect's entry is lifted."""

    prospect_id: str


ReferenceInput = PredictionRecord | CallOutcome | DoNotCallEntry | Lift


@dataclass(frozen=True)
class OpenTask:
    """The fields of a prospect's open task that the rules decide."""

    task_id: str
    event_id: str
    score: float
    priority: Priority
    expires_at: datetime | None
    supersedes: str | None


@dataclass(frozen=True)
class Withdrawn:
    """A tombstone: the prospect's last task, and why it is no longer open."""

    task_id: str
    reason: Withdrawal


ReferenceState = OpenTask | Withdrawn


@dataclass(frozen=True)
class ReferenceResult:
    final: dict[str, ReferenceState]  # per prospect that ever had a task
    # Keys as QueueCounts' fields (queued, superseded, late, cooling_down, suppressed,
    # duplicate, below_floor, closed, exhausted, recycled, stale, do_not_call, lifted) and
    # `withdrawn.<reason>`.
    counts: Counter[str]
    stream_time: datetime | None  # reference_deployment: the newest of the partitions'
    retried: list[str] = field(default_factory=list)  # task ids sent back to be scored again


def reference_queue(
    inputs: Iterable[ReferenceInput],
    ttl: timedelta,
    recontact_after: timedelta,
    max_attempts: int = 5,
    retry_min_score: float = 0.0,
    forget_after: timedelta | None = None,
) -> ReferenceResult:
    """The queue after the inputs of one partition, applied one by one in order. It forgets
    nothing: an event older than the stream time minus `forget_after` is late."""
    final: dict[str, ReferenceState] = {}
    attempts: dict[str, int] = {}  # task id -> its event's `campaign`
    retried: list[str] = []
    newest_queued: dict[str, PredictionRecord] = {}  # open, or closed since
    reached_at: dict[str, datetime] = {}
    do_not_call: set[str] = set()
    counts: Counter[str] = Counter()
    stream_time: datetime | None = None

    def open_task(prospect_id: str) -> OpenTask | None:
        state = final.get(prospect_id)
        return state if isinstance(state, OpenTask) else None

    def withdraw(prospect_id: str, reason: Withdrawal) -> None:
        task = open_task(prospect_id)
        assert task is not None
        final[prospect_id] = Withdrawn(task.task_id, reason)
        counts[f"withdrawn.{reason}"] += 1

    def expire_reached(now: datetime) -> None:
        for prospect_id, state in list(final.items()):
            expires_at = state.expires_at if isinstance(state, OpenTask) else None
            if expires_at is not None and expires_at <= now:
                withdraw(prospect_id, "expired")

    for item in inputs:
        pid = item.prospect_id
        if isinstance(item, PredictionRecord):
            at = item.occurred_at
            if stream_time is None or at > stream_time:
                stream_time = at
            expire_reached(stream_time)
            newest = newest_queued.get(pid)
            if pid in do_not_call:
                counts["suppressed"] += 1
            elif forget_after is not None and at < stream_time - forget_after:
                counts["late"] += 1
            elif newest is not None and newest.event_id == item.event_id:
                counts["duplicate"] += 1
            elif newest is not None and at <= newest.occurred_at:
                counts["late"] += 1
            elif pid in reached_at and at < reached_at[pid] + recontact_after:
                counts["cooling_down"] += 1
            elif (
                item.retry_of is not None
                and item.retry_reason != "callback"
                and item.score < retry_min_score
            ):
                counts["below_floor"] += 1
            else:
                counts["queued"] += 1
                replaced = open_task(pid)
                if replaced is not None:
                    counts["superseded"] += 1
                final[pid] = OpenTask(
                    task_id=item.task_id,
                    event_id=item.event_id,
                    score=item.score,
                    priority=item.priority,
                    expires_at=max(at, item.not_before or at) + ttl,
                    supersedes=None if replaced is None else replaced.task_id,
                )
                attempts[item.task_id] = item.features["campaign"]
                newest_queued[pid] = item
                expire_reached(stream_time)  # queued for an event older than the stream time
        elif isinstance(item, CallOutcome):
            task = open_task(pid)
            if item.disposition == "do_not_call":
                do_not_call.add(pid)
            if task is None or (item.task_id != task.task_id and item.event_id != task.event_id):
                counts["stale"] += 1
                if task is not None and pid in do_not_call:
                    withdraw(pid, "suppressed")
            elif item.disposition == "reached":
                counts["closed"] += 1
                withdraw(pid, "closed")
                reached_at[pid] = max(item.called_at, reached_at.get(pid, item.called_at))
            elif item.disposition == "do_not_call":
                counts["closed"] += 1
                withdraw(pid, "suppressed")
            elif item.disposition == "wrong_number":
                counts["closed"] += 1
                withdraw(pid, "closed")
            elif attempts[task.task_id] >= max_attempts:
                counts["closed"] += 1
                counts["exhausted"] += 1
                withdraw(pid, "closed")
            else:
                counts["recycled"] += 1
                retried.append(task.task_id)
                withdraw(pid, "recycled")
        elif isinstance(item, DoNotCallEntry):
            counts["do_not_call"] += 1
            do_not_call.add(pid)
            if open_task(pid) is not None:
                withdraw(pid, "suppressed")
        else:
            counts["lifted"] += 1
            do_not_call.discard(pid)
    return ReferenceResult(final, counts, stream_time, retried)


def reference_deployment(
    inputs: Iterable[ReferenceInput],
    ttl: timedelta,
    recontact_after: timedelta,
    partitions: int,
    forget_after: timedelta | None = None,
) -> ReferenceResult:
    """The queue of a deployment: each prospect's inputs on its partition, each partition with
    its own stream time; `inputs` in the order each partition received them."""
    by_partition: dict[int, list[ReferenceInput]] = defaultdict(list)
    for item in inputs:
        by_partition[partition_for(item.prospect_id, partitions)].append(item)
    final: dict[str, ReferenceState] = {}
    counts: Counter[str] = Counter()
    times: list[datetime] = []
    for items in by_partition.values():
        result = reference_queue(items, ttl, recontact_after, forget_after=forget_after)
        final.update(result.final)
        counts.update(result.counts)
        if result.stream_time is not None:
            times.append(result.stream_time)
    return ReferenceResult(final, counts, max(times, default=None))


def reference_input(item: QueueInput) -> ReferenceInput:
    """A decoded record of the queue's input topic as the model's input."""
    if item.prediction is not None:
        return item.prediction
    if item.outcome is not None:
        return item.outcome
    return item.entry if item.entry is not None else Lift(item.prospect_id)


def queue_state_of(
    records: Iterable[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]],
) -> dict[str, ReferenceState]:
    """The newest record per key of a `call-queue` topic, as (key, value, headers) in offset
    order, in the shape of `ReferenceResult.final`."""
    newest: dict[str, tuple[bytes | None, Sequence[tuple[str, bytes]]]] = {}
    for key, value, headers in records:
        if key is None:
            raise ValueError("a call-queue record without a key")
        newest[key.decode()] = (value, headers)
    return {prospect_id: _state(value, headers) for prospect_id, (value, headers) in newest.items()}


def _state(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> ReferenceState:
    if value is not None:
        task = CallTask.model_validate_json(value)
        return OpenTask(
            task.task_id, task.event_id, task.score, task.priority, task.expires_at, task.supersedes
        )
    named = {name: raw.decode() for name, raw in headers}
    reason, task_id = named.get(WITHDRAWAL_HEADER), named.get("task_id")
    for withdrawal in WITHDRAWALS:
        if reason == withdrawal and task_id is not None:
            return Withdrawn(task_id, withdrawal)
    raise ValueError(f"a call-queue tombstone without a task_id or a reason: headers {named}")
