"""The call queue's rules for one partition: entries and a batch of inputs in; the new entries,
the records to publish and the counts out. No I/O (tests/test_queue_rules.py).

Inputs are applied one by one in partition order; the stream time is the newest `occurred_at`
of the partition's scored events, and a task expires as soon as the stream time reaches its
`expires_at`, so a replay expires tasks exactly as live traffic did, whatever the batching.

The rules, input by input, are the table "The call queue" in docs/architecture.md: a scored
event is `suppressed` (do-not-call: nothing published), a `duplicate` (the same records again),
`late` (not newer than the newest queued event, or older than the stream time minus
`forget_after`: only its prediction-log line), `cooling_down`
(within `recontact_after` of a call that reached the prospect: only its prediction-log line) or
`queued` (its prediction-log line, the task on its tier topic and on the queue, superseding the
open task); an outcome naming the open task closes it (`closed`), any other is `stale`; a
do-not-call entry withdraws the open task (`suppressed`), its tombstone lifts it; a task whose
`expires_at` the stream time reaches is withdrawn (`expired`).

Every changed entry is also published on the state changelog (last change per batch), so the
partition's next owner resumes it. An entry remembers the offset of the input that changed it
last, so an input up to that offset, applied again after a failed commit, is `redelivered` and
changes and publishes nothing: the first time's records were acknowledged before the changelog.
An entry that can no longer change a decision is forgotten
(`forget_after`): no open task, no objection, and the stream time more than `forget_after` past
both its newest event and the end of its cooling-down; its changelog tombstone makes the next
owner forget it too. It changes no decision: an event older than the stream time minus
`forget_after` is `late` whether its prospect's entry is kept or not, and any newer one is newer
than everything the forgotten entry remembered (docs/architecture.md, "The call queue").

Accounting, checked whenever a `QueueResult` is built:
scored = queued + late + cooling_down + suppressed + duplicate; outcomes = closed + stale;
do-not-call records = do_not_call + lifted; consumed = scored + outcomes + do-not-call records +
claims + redelivered.

A `PartitionQueue` changes its entries as it applies a batch: when publishing the result fails
for good, drop the object and rebuild the partition from the changelog.
"""

from __future__ import annotations

import heapq
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from callqueue.inputs import QueueInput
from callqueue.state import ProspectEntry, entry_json
from core.settings import Settings
from core.topic_writer import Outgoing
from schemas import (
    MONTHS,
    WITHDRAWAL_HEADER,
    CallOutcome,
    CallTask,
    Claim,
    DoNotCallEntry,
    PredictionRecord,
    Priority,
    Recycled,
    Withdrawal,
)


class QueueAccountingError(RuntimeError):
    """A queue result that would lose or invent inputs; never published."""


@dataclass(frozen=True)
class QueueTopics:
    predictions: str
    tasks: Mapping[Priority, str]
    queue: str
    state: str
    prospects: str  # where a retry goes, to be scored again

    @classmethod
    def of(cls, settings: Settings) -> QueueTopics:
        return cls(
            settings.topic_predictions,
            settings.task_topics,
            settings.topic_queue,
            settings.topic_queue_state,
            settings.topic_prospects,
        )


@dataclass(frozen=True)
class QueuePolicy:
    task_ttl: timedelta
    recontact_after: timedelta
    max_attempts: int = 5
    retry_min_score: float = 0.0
    # The delay before a retry, per disposition without a decision (a callback: its callback_at).
    retry_after: Mapping[Recycled, timedelta] = field(default_factory=dict)
    # How far behind its stream time the partition still takes events, and so how long a closed
    # prospect's entry is kept; None: every entry is kept and no event is too old.
    forget_after: timedelta | None = None

    @classmethod
    def of(cls, settings: Settings) -> QueuePolicy:
        return cls(
            timedelta(days=settings.task_ttl_days),
            timedelta(days=settings.recontact_after_days),
            settings.max_attempts,
            settings.retry_min_score,
            {
                "no_answer": timedelta(hours=settings.retry_after_no_answer_hours),
                "busy": timedelta(hours=settings.retry_after_busy_hours),
                "voicemail": timedelta(hours=settings.retry_after_voicemail_hours),
            },
            timedelta(days=settings.queue_forget_after_days),
        )


@dataclass
class QueueCounts:
    scored: int = 0
    queued: int = 0
    superseded: int = 0  # of the queued: they replaced an open task
    late: int = 0
    cooling_down: int = 0
    suppressed: int = 0
    duplicate: int = 0
    below_floor: int = 0  # retries whose new score fell below the floor
    outcomes: int = 0
    closed: int = 0
    exhausted: int = 0  # of the closed: no decision, and no attempt left
    recycled: int = 0  # no decision: a retry was sent to be scored again
    stale: int = 0
    do_not_call_records: int = 0
    do_not_call: int = 0
    lifted: int = 0
    claims: int = 0
    claims_granted: int = 0  # a redelivered granted claim counts again, and publishes again
    claims_refused: int = 0
    redelivered: int = 0  # inputs the entry had applied already: nothing changed or published
    withdrawn: Counter[Withdrawal] = field(default_factory=Counter)
    forgotten: int = 0  # entries dropped (not inputs: outside the accounting)

    def __add__(self, other: QueueCounts) -> QueueCounts:
        return QueueCounts(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def check(self, consumed: int) -> None:
        problems = []
        decided = (
            self.queued
            + self.late
            + self.cooling_down
            + self.suppressed
            + self.duplicate
            + self.below_floor
        )
        if self.scored != decided:
            problems.append(
                f"scored {self.scored} != queued {self.queued} + late {self.late} + cooling "
                f"down {self.cooling_down} + suppressed {self.suppressed} + duplicate "
                f"{self.duplicate} + below floor {self.below_floor}"
            )
        if self.outcomes != self.closed + self.recycled + self.stale:
            problems.append(
                f"outcomes {self.outcomes} != closed {self.closed} + recycled {self.recycled} + "
                f"stale {self.stale}"
            )
        if self.do_not_call_records != self.do_not_call + self.lifted:
            problems.append(
                f"do-not-call records {self.do_not_call_records} != entries {self.do_not_call} "
                f"+ lifts {self.lifted}"
            )
        if self.claims != self.claims_granted + self.claims_refused:
            problems.append(
                f"claims {self.claims} != granted {self.claims_granted} + refused "
                f"{self.claims_refused}"
            )
        applied = self.scored + self.outcomes + self.do_not_call_records + self.claims
        if consumed != applied + self.redelivered:
            problems.append(
                f"consumed {consumed} != scored {self.scored} + outcomes {self.outcomes} + "
                f"do-not-call records {self.do_not_call_records} + claims {self.claims} + "
                f"redelivered {self.redelivered}"
            )
        if problems:
            raise QueueAccountingError("; ".join(problems))


@dataclass(frozen=True)
class QueueResult:
    consumed: int
    entries: dict[str, ProspectEntry]  # every entry the batch changed, as it is now
    outgoing: list[Outgoing]
    counts: QueueCounts
    stream_time: datetime | None
    forgotten: list[str] = field(default_factory=list)  # prospects whose entries it dropped

    def __post_init__(self) -> None:
        self.counts.check(self.consumed)


@dataclass
class _Batch:
    """What one `apply` call collects."""

    changed: dict[str, ProspectEntry] = field(default_factory=dict)
    forgotten: list[str] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    counts: QueueCounts = field(default_factory=QueueCounts)


class PartitionQueue:
    """The entries of one partition of the queue and the rules that change them."""

    def __init__(
        self,
        partition: int,
        topics: QueueTopics,
        policy: QueuePolicy,
        entries: Iterable[ProspectEntry] = (),
    ) -> None:
        self.partition = partition
        self._topics = topics
        self._policy = policy
        self.entries: dict[str, ProspectEntry] = {e.prospect_id: e for e in entries}
        self.open_by_tier: Counter[Priority] = Counter(
            e.open_task.priority for e in self.entries.values() if e.open_task is not None
        )
        seen = [e.newest_seen_at for e in self.entries.values() if e.newest_seen_at is not None]
        self.stream_time: datetime | None = max(seen, default=None)
        self._offset: int | None = None  # of the input being applied
        # (expires_at, prospect_id, task_id) of open tasks; stale items are skipped when popped.
        self._expiries: list[tuple[datetime, str, str]] = []
        # (when the stream time passing it forgets the entry, prospect_id) of entries without an
        # open task or an objection; stale items are skipped when popped.
        self._forgettable: list[tuple[datetime, str]] = []
        for entry in self.entries.values():
            self._remember_expiry(entry.open_task)
            self._remember_forgettable(entry)

    def open_tasks(self) -> list[CallTask]:
        return [e.open_task for e in self.entries.values() if e.open_task is not None]

    def apply(self, inputs: Sequence[QueueInput]) -> QueueResult:
        batch = _Batch()
        for item in inputs:
            if self._applied_already(item):
                batch.counts.redelivered += 1
                continue
            self._offset = item.offset
            entry = self._current(batch, item.prospect_id)
            if item.kind == "scored":
                assert item.prediction is not None
                self._scored(batch, entry, item.prediction, item.value)
            elif item.kind == "outcome":
                assert item.outcome is not None
                self._outcome(batch, entry, item.outcome)
            elif item.kind == "claim":
                assert item.claim is not None
                self._claim(batch, entry, item.claim)
            else:
                self._do_not_call(batch, entry, item.entry)
        self._forget_passed(batch)
        for entry in batch.changed.values():
            batch.outgoing.append(self._state_record(entry))
        for prospect_id in batch.forgotten:
            batch.outgoing.append(self._state_tombstone(prospect_id))
        return QueueResult(
            len(inputs),
            batch.changed,
            batch.outgoing,
            batch.counts,
            self.stream_time,
            batch.forgotten,
        )

    def _applied_already(self, item: QueueInput) -> bool:
        entry = self.entries.get(item.prospect_id)
        last = None if entry is None else entry.applied_offset
        return last is not None and item.offset <= last

    def _current(self, batch: _Batch, prospect_id: str) -> ProspectEntry:
        """The prospect's entry, its open task expired first if the stream time already reached
        it. Only after a restart can that be so (the changelog landed for some of a batch's
        entries, not for all): it makes the rebuilt partition withdraw it as the uninterrupted
        one did."""
        entry = self.entries.get(prospect_id) or ProspectEntry(prospect_id=prospect_id)
        task, now = entry.open_task, self.stream_time
        if task is None or task.expires_at is None or now is None or task.expires_at > now:
            return entry
        self._withdraw(batch, entry, "expired")
        return self.entries[prospect_id]

    # --- the rules -------------------------------------------------------------------------
    def _scored(
        self,
        batch: _Batch,
        entry: ProspectEntry,
        prediction: PredictionRecord,
        value: bytes | None,
    ) -> None:
        counts = batch.counts
        counts.scored += 1
        at = prediction.occurred_at
        # The event's time first: a task its time reaches has expired before the event's own
        # rule applies, so it is withdrawn as expired, not superseded.
        self._advance(batch, at)
        entry = self.entries.get(entry.prospect_id, entry)
        seen = at if entry.newest_seen_at is None else max(entry.newest_seen_at, at)
        entry = replace(entry, newest_seen_at=seen)
        if entry.do_not_call:  # before the duplicate rule: an objection silences redeliveries too
            counts.suppressed += 1
            self._change(batch, entry)
        elif self._too_old(at):  # before the rules that read the entry: it may be forgotten
            counts.late += 1
            batch.outgoing.append(self._prediction_record(prediction, value))
        elif entry.newest_event_id == prediction.event_id:
            counts.duplicate += 1
            batch.outgoing.append(self._prediction_record(prediction, value))
            task = entry.open_task
            if task is not None and task.event_id == prediction.event_id:
                batch.outgoing += self._task_records(task)
        elif entry.newest_event_at is not None and at <= entry.newest_event_at:
            counts.late += 1
            batch.outgoing.append(self._prediction_record(prediction, value))
        elif entry.reached_at is not None and at < entry.reached_at + self._policy.recontact_after:
            counts.cooling_down += 1
            batch.outgoing.append(self._prediction_record(prediction, value))
            self._change(batch, entry)
        elif (
            prediction.retry_of is not None
            and prediction.retry_reason != "callback"
            and prediction.score < self._policy.retry_min_score
        ):
            counts.below_floor += 1
            batch.outgoing.append(self._prediction_record(prediction, value))
            self._change(batch, entry)
        else:
            counts.queued += 1
            previous = entry.open_task
            task = self._task(prediction, previous)
            if previous is not None:
                counts.superseded += 1
            batch.outgoing.append(self._prediction_record(prediction, value))
            batch.outgoing += self._task_records(task)
            entry = replace(
                entry,
                open_task=task,
                open_features=prediction.features,
                newest_event_at=at,
                newest_event_id=prediction.event_id,
            )
            self._change(batch, entry)
            self._remember_expiry(task)
            self._expire_reached(batch)

    def _outcome(self, batch: _Batch, entry: ProspectEntry, outcome: CallOutcome) -> None:
        counts = batch.counts
        counts.outcomes += 1
        if outcome.disposition == "do_not_call":  # an objection stands, whichever task it names
            entry = replace(entry, do_not_call=True)
        task = entry.open_task
        names_it = task is not None and (
            outcome.task_id == task.task_id or outcome.event_id == task.event_id
        )
        if task is None or not names_it:
            counts.stale += 1
            if entry.do_not_call and task is not None:
                self._withdraw(batch, entry, "suppressed")
            elif entry.do_not_call:
                self._change(batch, entry)
            return
        if outcome.disposition == "reached":
            counts.closed += 1
            reached = outcome.called_at
            if entry.reached_at is not None:
                reached = max(reached, entry.reached_at)
            self._withdraw(batch, replace(entry, reached_at=reached), "closed")
        elif outcome.disposition == "do_not_call":
            counts.closed += 1
            self._withdraw(batch, entry, "suppressed")
        elif outcome.disposition == "wrong_number" or task.attempt is None:
            counts.closed += 1
            self._withdraw(batch, entry, "closed")
        elif task.attempt >= self._policy.max_attempts or entry.open_features is None:
            counts.closed += 1
            counts.exhausted += 1
            self._withdraw(batch, entry, "closed")
        else:
            counts.recycled += 1
            batch.outgoing.append(self._retry(entry, task, entry.open_features, outcome))
            self._withdraw(batch, entry, "recycled")

    def _retry(
        self,
        entry: ProspectEntry,
        task: CallTask,
        features: dict[str, Any],
        outcome: CallOutcome,
    ) -> Outgoing:
        """The task's event again, one attempt later, for the scorer to score with the serving
        model (its prediction-log line is then a line like any other, for the monitor).

        `campaign` counts this campaign's contacts, so the retry's is the attempt's + 1; `pdays`
        and `previous` describe previous campaigns, so they stay; `day`/`month` are the planned
        contact's, the day it is due. Its time is the call's (a retry is newer than the event it
        retries, and a newer event of the prospect makes it late), and its id is derived from
        the task's, so a redelivered outcome sends the same retry again, a duplicate.
        """
        reason = cast(Recycled, outcome.disposition)  # the caller's branch: not a decision
        if reason == "callback":
            assert outcome.callback_at is not None  # the contract requires it
            due = outcome.callback_at
        else:
            due = outcome.called_at + self._policy.retry_after.get(reason, timedelta())
        occurred = outcome.called_at
        if entry.newest_event_at is not None and occurred <= entry.newest_event_at:
            occurred = entry.newest_event_at + timedelta(milliseconds=1)
        assert task.attempt is not None
        event = {
            "event_id": retry_event_id(task.task_id),
            "prospect_id": entry.prospect_id,
            "occurred_at": occurred.isoformat(),
            **features,
            "campaign": task.attempt + 1,
            "day": due.day,
            "month": MONTHS[due.month - 1],
            "not_before": due.isoformat(),
            "retry_of": task.task_id,
            "retry_reason": reason,
        }
        return Outgoing(
            self._topics.prospects,
            entry.prospect_id.encode(),
            json.dumps(event).encode(),
            [("retry_of", task.task_id.encode())],
        )

    def _claim(self, batch: _Batch, entry: ProspectEntry, claim: Claim) -> None:
        """Grant the claim if it names the open task, the task is due at the claim's time and
        no other claim's lease runs past it; the granted task goes on the queue only (it is not
        a new task for the tier topics)."""
        counts = batch.counts
        counts.claims += 1
        task = entry.open_task
        at = claim.requested_at
        if task is not None and task.claim_id == claim.claim_id:  # redelivered: the same record
            counts.claims_granted += 1
            batch.outgoing.append(self._queue_record(task))
            return
        held = task is not None and task.lease_until is not None and task.lease_until > at
        if (
            task is None
            or task.task_id != claim.task_id
            or (task.not_before is not None and task.not_before > at)
            or held
        ):
            counts.claims_refused += 1
            return
        counts.claims_granted += 1
        claimed = task.model_copy(
            update={
                "claim_id": claim.claim_id,
                "claimed_by": claim.agent,
                "lease_until": claim.lease_until,
            }
        )
        batch.outgoing.append(self._queue_record(claimed))
        self._change(batch, replace(entry, open_task=claimed))

    def _do_not_call(
        self, batch: _Batch, entry: ProspectEntry, objection: DoNotCallEntry | None
    ) -> None:
        batch.counts.do_not_call_records += 1
        if objection is None:
            batch.counts.lifted += 1
            self._change(batch, replace(entry, do_not_call=False))
            return
        batch.counts.do_not_call += 1
        entry = replace(entry, do_not_call=True)
        if entry.open_task is not None:
            self._withdraw(batch, entry, "suppressed")
        else:
            self._change(batch, entry)

    def _advance(self, batch: _Batch, at: datetime) -> None:
        """Move the stream time to `at` (never back) and expire what it reached."""
        if self.stream_time is None or at > self.stream_time:
            self.stream_time = at
        self._expire_reached(batch)

    def _expire_reached(self, batch: _Batch) -> None:
        """Withdraw every open task whose `expires_at` the stream time has reached: no task is
        open past its expiry, even one queued for an event older than the stream time."""
        at = self.stream_time
        while at is not None and self._expiries and self._expiries[0][0] <= at:
            _expires_at, prospect_id, task_id = heapq.heappop(self._expiries)
            entry = self.entries.get(prospect_id)
            if entry is None or entry.open_task is None or entry.open_task.task_id != task_id:
                continue  # closed, replaced or withdrawn since
            self._withdraw(batch, entry, "expired")

    # --- forgetting ------------------------------------------------------------------------
    def _too_old(self, at: datetime) -> bool:
        horizon, now = self._policy.forget_after, self.stream_time
        return horizon is not None and now is not None and at < now - horizon

    def _forget_at(self, entry: ProspectEntry) -> datetime | None:
        """When the stream time passing it makes the entry forgettable; None: never (an open task
        or an objection, or no `forget_after`)."""
        horizon = self._policy.forget_after
        if horizon is None or entry.open_task is not None or entry.do_not_call:
            return None
        newest = entry.newest_seen_at
        if entry.reached_at is not None:
            cooled = entry.reached_at + self._policy.recontact_after
            newest = cooled if newest is None else max(newest, cooled)
        return _LONG_AGO if newest is None else newest + horizon

    def _remember_forgettable(self, entry: ProspectEntry) -> None:
        at = self._forget_at(entry)
        if at is not None:
            heapq.heappush(self._forgettable, (at, entry.prospect_id))

    def _forget_passed(self, batch: _Batch) -> None:
        """Drop the entries the stream time has passed the forget time of."""
        now = self.stream_time
        while now is not None and self._forgettable and self._forgettable[0][0] < now:
            at, prospect_id = heapq.heappop(self._forgettable)
            entry = self.entries.get(prospect_id)
            if entry is None or self._forget_at(entry) != at:
                continue  # changed since: its newer item (if any) is in the heap
            del self.entries[prospect_id]
            batch.changed.pop(prospect_id, None)
            batch.forgotten.append(prospect_id)
            batch.counts.forgotten += 1

    # --- changes and records ---------------------------------------------------------------
    def _change(self, batch: _Batch, entry: ProspectEntry) -> None:
        old = self.entries.get(entry.prospect_id)
        if old is not None and old.open_task is not None:
            self.open_by_tier[old.open_task.priority] -= 1
        if entry.open_task is not None:
            self.open_by_tier[entry.open_task.priority] += 1
        entry = replace(entry, applied_offset=self._offset)
        self.entries[entry.prospect_id] = entry
        batch.changed[entry.prospect_id] = entry
        at = self._forget_at(entry)
        if at is not None and (old is None or self._forget_at(old) != at):
            heapq.heappush(self._forgettable, (at, entry.prospect_id))

    def _withdraw(self, batch: _Batch, entry: ProspectEntry, reason: Withdrawal) -> None:
        task = entry.open_task
        assert task is not None
        batch.counts.withdrawn[reason] += 1
        batch.outgoing.append(
            Outgoing(
                self._topics.queue,
                entry.prospect_id.encode(),
                None,
                [("task_id", task.task_id.encode()), (WITHDRAWAL_HEADER, reason.encode())],
                partition=self.partition,
            )
        )
        self._change(batch, replace(entry, open_task=None, open_features=None))

    def _remember_expiry(self, task: CallTask | None) -> None:
        if task is not None and task.expires_at is not None:
            heapq.heappush(self._expiries, (task.expires_at, task.prospect_id, task.task_id))

    def _task(self, prediction: PredictionRecord, previous: CallTask | None) -> CallTask:
        # Unvalidated construction: every field comes from the validated prediction record (or
        # the task it replaces). A claim holds the prospect, so it carries over to the new task
        # until its lease runs out.
        held = previous if previous is not None and previous.claim_id is not None else None
        return CallTask.model_construct(
            task_id=prediction.task_id,
            event_id=prediction.event_id,
            prospect_id=prediction.prospect_id,
            score=prediction.score,
            priority=prediction.priority,
            percentile=prediction.percentile,
            model_version=prediction.model_version,
            scored_at=prediction.scored_at,
            expires_at=max(prediction.occurred_at, prediction.not_before or prediction.occurred_at)
            + self._policy.task_ttl,
            supersedes=previous.task_id if previous is not None else None,
            not_before=prediction.not_before,
            attempt=prediction.features["campaign"],
            retry_of=prediction.retry_of,
            claim_id=held.claim_id if held else None,
            claimed_by=held.claimed_by if held else None,
            lease_until=held.lease_until if held else None,
        )

    def _task_records(self, task: CallTask) -> list[Outgoing]:
        """The task on its tier topic (every new task) and as the prospect's queue entry."""
        value = _TASK_JSON.to_json(task)
        headers = [
            ("model_version", str(task.model_version).encode()),
            ("task_id", task.task_id.encode()),
        ]
        key = task.prospect_id.encode()
        return [
            Outgoing(self._topics.tasks[task.priority], key, value, headers),
            Outgoing(self._topics.queue, key, value, headers, partition=self.partition),
        ]

    def _queue_record(self, task: CallTask) -> Outgoing:
        """The task as the prospect's queue entry only."""
        return self._task_records(task)[1]

    def _prediction_record(self, prediction: PredictionRecord, value: bytes | None) -> Outgoing:
        """The line as the scorer wrote it (the input's bytes), keyed by event id as always."""
        headers = [
            ("model_version", str(prediction.model_version).encode()),
            ("task_id", prediction.task_id.encode()),
        ]
        body = value if value is not None else _RECORD_JSON.to_json(prediction)
        return Outgoing(self._topics.predictions, prediction.event_id.encode(), body, headers)

    def _state_record(self, entry: ProspectEntry) -> Outgoing:
        return Outgoing(
            self._topics.state,
            entry.prospect_id.encode(),
            entry_json(entry),
            partition=self.partition,
        )

    def _state_tombstone(self, prospect_id: str) -> Outgoing:
        return Outgoing(self._topics.state, prospect_id.encode(), None, partition=self.partition)


_TASK_JSON = CallTask.__pydantic_serializer__
_LONG_AGO = datetime.min.replace(tzinfo=UTC)  # an entry that remembers no time: forget it now
# Fixed: a retry's event id must be the same in every process and after every restart.
_RETRY_NAMESPACE = uuid.UUID("a3d6f0e2-3b0c-4f7e-9a51-6c2f1d8e4b70")


def retry_event_id(task_id: str) -> str:
    """The event id of the retry of a task (one retry per task: the retry has its own task)."""
    return str(uuid.uuid5(_RETRY_NAMESPACE, task_id))


_RECORD_JSON = PredictionRecord.__pydantic_serializer__
