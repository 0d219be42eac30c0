"""The demo's closing check: produced = scored + dead-lettered + duplicates, counted on the topics.

The counts come from a fresh read of the topics once the scorer has stopped, not from the live
view: every record on the prospects topic must have been scored (one distinct event id) or
dead-lettered (one distinct source partition and offset), and nothing else.

The prospects topic holds the replay's records and the call queue's retries: a call without a
decision (no answer, busy, voicemail, a callback) sends the prospect's event back one attempt
later, with `retry_of` (the task it retries) and an event id derived from that task
(`callqueue.rules.retry_event_id`). A retry is an event like any other, scored or suppressed, so
it is in `produced` and `scored` alike. The queue sends the same retry again when an outcome is
redelivered (same event id, another offset); the scorer drops such a repeat as a duplicate
(its dedupe window): scored is counted by distinct event id, so each record beyond the first of
an event that is not dead-lettered is a `duplicate`, the check's third term.

With the call queue, a scored event is not always a call task: a late or cooling-down event has
only its prediction-log line, and an event of a do-not-call prospect (`suppressed`) has no
record at all on the product's topics, by design (processing for marketing must stop). So
neither the tier topics nor the prediction log alone count what was scored. What is exact is
the queue's own input topic (`call-queue.inputs`): the scorer writes every event it scored there
once, kind `scored`, before the queue decides anything, and a suppressed event leaves that
record and nothing else. So:

  scored     = distinct event ids of the prediction log and of the `scored` inputs (without the
               queue, CALLSCORE_QUEUE_ENABLED=false, there are no inputs: the prediction log is
               every scoring);
  logged     = those on the prediction log (queued, late, cooling down);
  suppressed = scored - logged (no prediction-log line);
  queued     = distinct event ids of the tasks on the tier topics (each with its log line).

The scorer's own `suppressed` count (callscore_queue_inputs_total) is not used for the check: it
counts applications of an input, so a redelivered batch would count an event twice; the summary
shows it beside the topics' number. The call queue's state at the end (open tasks per tier,
withdrawals by reason) is read from the compacted `call-queue` topic as a dialer mirrors it; the
calls per disposition from the outcomes topic (valid outcomes only), the retry tasks by attempt
from the tier topics.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from callqueue.inputs import KIND_HEADER
from callqueue.view import QueueView
from core.settings import Settings
from core.topic_reader import Record, TopicReader
from schemas import CallTask, DeadLetter
from schemas.decode import InvalidEvent, decode_outcome

READ_TIMEOUT_SECONDS = 60.0

Message = TypeVar("Message", CallTask, DeadLetter)


@dataclass
class Reconciliation:
    produced: int = 0
    replayed: int = 0  # of the produced: the replay's records (not a retry of the call queue)
    scored: int = 0
    logged: int = 0  # of the scored: on the prediction log
    suppressed: int = 0  # of the scored: no prediction-log line (do-not-call)
    queued: int = 0  # of the logged: a call task on a tier topic
    dead_lettered: int = 0
    duplicates: int = 0  # records of an event already on the topic (dropped by the scorer)
    retries: int = 0  # of the produced: distinct retries the call queue sent
    tiers: Counter[str] = field(default_factory=Counter)
    retry_tasks: Counter[int] = field(default_factory=Counter)  # tasks by attempt, 2 and more
    calls: Counter[str] = field(default_factory=Counter)  # valid outcomes by disposition
    dead_by_kind: Counter[str] = field(default_factory=Counter)
    queue_open: dict[str, int] = field(default_factory=dict)
    queue_withdrawals: dict[str, int] = field(default_factory=dict)
    unknown_scored: int = 0  # scored event ids on no prospect record
    unknown_tasks: int = 0  # tasks whose event id is on no prospect record or log line
    unknown_dead_letters: int = 0  # dead letters pointing at no prospect record

    @property
    def reconciles(self) -> bool:
        return (
            self.produced == self.scored + self.dead_lettered + self.duplicates
            and self.unknown_scored == 0
            and self.unknown_tasks == 0
            and self.unknown_dead_letters == 0
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "produced": self.produced,
            "replayed": self.replayed,
            "scored": self.scored,
            "logged": self.logged,
            "suppressed": self.suppressed,
            "queued": self.queued,
            "dead_lettered": self.dead_lettered,
            "duplicates": self.duplicates,
            "retries": self.retries,
            "tiers": dict(self.tiers),
            "retry_tasks": {str(attempt): n for attempt, n in sorted(self.retry_tasks.items())},
            "dead_by_kind": dict(self.dead_by_kind),
            "unknown_scored": self.unknown_scored,
            "unknown_tasks": self.unknown_tasks,
            "unknown_dead_letters": self.unknown_dead_letters,
            "reconciles": self.reconciles,
        }


def count(settings: Settings, records: list[Record]) -> Reconciliation:
    """Distinct prospect records; the scorings (by event id), tasks and dead letters (by source)
    of them; the call queue as its topic leaves it; the calls by disposition."""
    prospects = settings.topic_prospects
    tier_topics = set(settings.task_topics.values())
    ids_at: dict[tuple[int, int], str | None] = {}  # each prospect record's event id
    retry_ids: set[str] = set()
    retry_offsets: set[tuple[int, int]] = set()
    logged: set[str] = set()
    scored_inputs: set[str] = set()
    tasks: dict[str, CallTask] = {}
    letters: dict[tuple[int, int], DeadLetter] = {}
    calls: Counter[str] = Counter()
    queue = QueueView()
    for record in records:
        if record.topic == prospects:
            event_id, retry_of = event_fields(record.value)
            ids_at[(record.partition, record.offset)] = event_id
            if retry_of is not None and event_id is not None:
                retry_ids.add(event_id)
                retry_offsets.add((record.partition, record.offset))
        elif record.topic == settings.topic_outcomes:
            with suppress(InvalidEvent):  # else the monitor dead-letters it: not a call
                calls[decode_outcome(record.value, settings.max_message_bytes).disposition] += 1
        elif record.topic == settings.topic_predictions:
            _add_event_id(logged, record.value)
        elif record.topic == settings.topic_queue_inputs:
            if record.headers.get(KIND_HEADER) == b"scored":
                _add_event_id(scored_inputs, record.value)
        elif record.topic == settings.topic_queue:
            queue.apply(record.key, record.value, record.headers)
        elif record.topic == settings.topic_dead_letters:
            letter = _parsed(DeadLetter, record.value)
            if letter is not None and letter.source_topic == prospects:
                letters[(letter.source_partition, letter.source_offset)] = letter
        elif record.topic in tier_topics and (task := _parsed(CallTask, record.value)):
            tasks[task.event_id] = task
    scored = logged | scored_inputs
    offsets = set(ids_at)
    event_ids = {event_id for event_id in ids_at.values() if event_id is not None}
    # Every record not dead-lettered is scored once per event id: the others are repeats.
    kept = [event_id for at, event_id in ids_at.items() if at not in letters and event_id]
    return Reconciliation(
        produced=len(offsets),
        replayed=len(offsets - retry_offsets),
        scored=len(scored),
        logged=len(logged),
        suppressed=len(scored - logged),
        queued=len(tasks),
        dead_lettered=len(letters),
        duplicates=len(kept) - len(set(kept)),
        retries=len(retry_ids),
        tiers=Counter(t.priority for t in tasks.values()),
        retry_tasks=Counter(t.attempt for t in tasks.values() if t.attempt and t.attempt > 1),
        calls=calls,
        dead_by_kind=Counter(letter.error_kind for letter in letters.values()),
        queue_open={tier: n for tier, n in queue.open_by_tier().items()},
        queue_withdrawals=queue.withdrawals(),
        unknown_scored=len(scored - event_ids),
        unknown_tasks=len(set(tasks) - (event_ids & logged)),
        unknown_dead_letters=len(set(letters) - offsets),
    )


def _parsed(model: type[Message], value: bytes | None) -> Message | None:
    try:
        return model.model_validate_json(value or b"")
    except ValidationError:
        return None


def _add_event_id(ids: set[str], value: bytes | None) -> None:
    """The record's `event_id`, if it is a JSON object with one (a malformed event has none)."""
    event_id, _retry_of = event_fields(value)
    if event_id is not None:
        ids.add(event_id)


def event_fields(value: bytes | None) -> tuple[str | None, str | None]:
    """A prospect record's `event_id` and `retry_of` (the task a queue's retry retries), each
    None when the record is not a JSON object with it (a malformed event; not a retry)."""
    try:
        document = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    event_id, retry_of = document.get("event_id"), document.get("retry_of")
    return (
        event_id if isinstance(event_id, str) else None,
        retry_of if isinstance(retry_of, str) else None,
    )


def reconcile(settings: Settings, kafka_log: logging.Logger) -> Reconciliation:
    """Read the prospects, the prediction log, the queue's scored inputs, the call tasks, the
    call queue, the dead letters and the outcomes to their end and count."""
    topics = [
        settings.topic_prospects,
        settings.topic_outcomes,
        settings.topic_predictions,
        settings.topic_queue_inputs,
        settings.topic_queue,
        *settings.task_topics.values(),
        settings.topic_dead_letters,
    ]
    with TopicReader(settings, topics, group_prefix="callscore-demo-check", logger=kafka_log) as r:
        return count(settings, r.read_to_end(READ_TIMEOUT_SECONDS))
