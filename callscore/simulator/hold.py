"""The replay with attempts holds each call's outcome until the call queue has decided the event
it calls, as a dialer, which never calls a task it has not seen.

The plan (simulator.attempts) times every call of a row up front: the first after the outcome
delay, each retry `DIAL_LAG` after it is due. But a retry's event is the call queue's own
(callqueue/rules.py, `_retry`): it exists only once the previous call's outcome was applied,
and its task only once the scorer has scored it and the queue has queued it. At a replay's
speed `DIAL_LAG` is a few milliseconds of wall time (at a month a minute a busy line's retry
is due 0.05 s after the call), far less than that round trip (seconds under load), so unheld
most retries' calls came before their task and were stale; so were some first calls, published
before their own event was scored.

So, before the outcome of a call is published, its event must be on the prediction log
(Settings.topic_predictions, keyed by event id): the queue writes a scored event's line in the
batch that decides it, queued or not, so once the line is there the queue has applied it, and an
outcome published after it is applied after it. `QueueDecisions` follows that topic (and the
call-queue topic, Settings.topic_queue) from the beginning in a thread of its own. While an
outcome waits, the records after it wait too: the replay's clock stops, so it slows down
rather than outrunning the queue, and a held outcome keeps its `called_at`.

A decision not to queue (a retry under the floor, a late or cooling-down event) is on the log
too: the hold ends at once and the outcome is stale, as it should be. An event the queue never
decides must not stop the replay, so the hold also ends, and the outcome is published at once,
when its event will not come:

- a retry of a task the queue will not retry: the previous call's event was decided but its task
  not queued (QUEUED_GRACE_SECONDS after the line, for the queue's records to arrive), the task
  was withdrawn otherwise than recycled (closed, expired, suppressed) or superseded by a newer
  event of the prospect, or the previous call was itself published without its event decided;
- a prospect who objects (a do-not-call entry the replay published, not lifted since): the
  queue suppresses its events without a line;
- a prospect who objected when the event was published, or after (the entry, routed, not
  scored, may reach the queue before the event: at the demo's speed an objection a day after
  the event is 50 ms of wall time later, less than scoring takes), lifted since: the queue
  suppressed the event without a line, so its call waits only `grace` for one.

Those count as `skipped`. Anything else waits at most HOLD_TIMEOUT_SECONDS, then is published
anyway (`too_long`); after such a timeout, while the prediction log stays silent (no scorer, or
a stopped one), the next calls are not held either, so a replay without a queue goes on.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from callscore.simulator.records import CallRef, ScheduledRecord
from core.settings import Settings
from core.topic_follower import TopicFollower
from core.topic_reader import Record
from schemas import WITHDRAWAL_HEADER

log = logging.getLogger(__name__)

# The longest a call's outcome waits for its event's decision.
HOLD_TIMEOUT_SECONDS = 30.0
# After an event's line, how long its task may take to show on the call-queue topic (the queue
# writes both in one batch) before the replay concludes that it was not queued.
QUEUED_GRACE_SECONDS = 1.0
# How often a held outcome looks again (delivery reports are served in between).
HOLD_POLL_SECONDS = 0.01
# How long a poll of the followed topics may wait: part of every hold.
FOLLOW_POLL_SECONDS = 0.05


class Decisions(Protocol):
    """What the call queue has decided so far, as the replay sees it."""

    @property
    def lines(self) -> int:
        """Prediction-log lines read so far (it grows while the queue decides anything)."""
        ...

    def decided_at(self, event_id: str) -> float | None:
        """When (the hold's clock) the event's prediction-log line was first seen; None: not yet."""
        ...

    def queued(self, task_id: str) -> bool:
        """The task was on the call-queue topic."""
        ...

    def ended(self, task_id: str) -> bool:
        """The task was withdrawn otherwise than recycled, or superseded: it is never retried."""
        ...


class QueueDecisions(TopicFollower):
    """The prediction log's event ids and the call-queue topic's tasks, followed from the
    beginning in a daemon thread (`start`, `stop`)."""

    def __init__(self, settings: Settings, poll_seconds: float = FOLLOW_POLL_SECONDS) -> None:
        super().__init__(
            settings,
            [settings.topic_predictions, settings.topic_queue],
            "replay hold",
            "callscore-simulate-hold",
            poll_seconds,
        )
        self._predictions = settings.topic_predictions
        self._decided: dict[str, float] = {}
        self._queued: set[str] = set()
        self._ended: set[str] = set()
        self._lines = 0

    @property
    def lines(self) -> int:
        return self._lines

    def decided_at(self, event_id: str) -> float | None:
        return self._decided.get(event_id)

    def queued(self, task_id: str) -> bool:
        return task_id in self._queued

    def ended(self, task_id: str) -> bool:
        return task_id in self._ended

    def handle(self, records: list[Record], at_end: bool) -> None:
        now = time.monotonic()
        for record in records:
            if record.topic == self._predictions:
                if record.key is not None:
                    self._decided.setdefault(record.key.decode(), now)
                self._lines += 1
                continue
            task_id = record.headers.get("task_id", b"").decode()
            if record.value is None:  # a withdrawal: recycled means its retry is on its way
                if record.headers.get(WITHDRAWAL_HEADER) != b"recycled":
                    self._ended.add(task_id)
                continue
            self._queued.add(task_id)
            superseded = _supersedes(record)
            if superseded:
                self._ended.add(superseded)


def _supersedes(record: Record) -> str | None:
    try:
        task = record.json()
    except ValueError:
        return None
    value = task.get("supersedes") if isinstance(task, dict) else None
    return value if isinstance(value, str) else None


class Verdict(Enum):
    DECIDED = "decided"  # the event is on the prediction log
    SKIPPED = "skipped"  # the event will not be decided: nothing to wait for
    SILENT = "silent"  # an earlier hold ran out and the queue has decided nothing since
    TOO_LONG = "too long"  # not decided within the timeout


@dataclass
class HoldStats:
    held: int = 0  # outcomes not published at their time: their event was not decided yet
    held_by_attempt: Counter[int] = field(default_factory=Counter)
    held_seconds: list[float] = field(default_factory=list)
    too_long: int = 0  # published undecided after the timeout (or while the queue was silent)
    skipped: int = 0  # published without a decision to wait for (the event will not come)

    @property
    def max_seconds(self) -> float:
        return max(self.held_seconds, default=0.0)

    @property
    def total_seconds(self) -> float:
        return sum(self.held_seconds)


class CallHold:
    """Holds outcomes until `decisions` shows their event decided (module docstring).

    `note` every record as it is published (the do-not-call entries matter), `wait` before
    publishing a record with a `call`. `clock` must be the clock of `decisions.decided_at`."""

    def __init__(
        self,
        decisions: Decisions,
        timeout: float = HOLD_TIMEOUT_SECONDS,
        grace: float = QUEUED_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.decisions = decisions
        self.stats = HoldStats()
        self._timeout = timeout
        self._grace = grace
        self._clock = clock
        self._objecting: set[bytes] = set()
        self._objected_at: dict[bytes, float] = {}  # a prospect's latest objection (published)
        # When the event a call names was published (the row's event), or could first exist (a
        # retry: the queue sends it once it applied the previous call, by its task id), and
        # whether its prospect objected then.
        self._event_sent: dict[str, tuple[float, bool]] = {}
        self._call_sent: dict[str, tuple[float, bool]] = {}
        self._undecided: set[str] = set()  # tasks whose call was published before a decision
        self._silent_at: int | None = None  # the log's lines when a hold last ran out
        self._held: dict[str, float] = {}  # task id of a held call -> when its hold began

    def note(self, record: ScheduledRecord) -> None:
        """Every record as it is published."""
        if record.malformed is not None:
            return
        now = self._clock()
        if record.kind == "event":
            self._event_sent.setdefault(record.record_id, (now, record.key in self._objecting))
        elif record.call is not None:
            self._call_sent.setdefault(record.call.task_id, (now, record.key in self._objecting))
        elif record.kind == "do_not_call" and record.value is None:
            self._objecting.discard(record.key)
        elif record.kind == "do_not_call":
            self._objecting.add(record.key)
            self._objected_at[record.key] = now

    def verdict(self, call: CallRef, key: bytes) -> Verdict | None:
        """Why the outcome may be published now; None: it waits."""
        decisions = self.decisions
        if decisions.decided_at(call.event_id) is not None:
            return Verdict.DECIDED
        if key in self._objecting or self._suppressed(call, key):
            return Verdict.SKIPPED
        previous = call.retry_of
        if previous is not None:
            if previous in self._undecided or decisions.ended(previous):
                return Verdict.SKIPPED
            assert call.retried_event_id is not None
            decided = decisions.decided_at(call.retried_event_id)
            if (
                decided is not None
                and not decisions.queued(previous)
                and self._clock() - decided >= self._grace
            ):
                return Verdict.SKIPPED
        if self._silent_at is not None and decisions.lines == self._silent_at:
            return Verdict.SILENT
        return None

    def _suppressed(self, call: CallRef, key: bytes) -> bool:
        """The prospect objected when the call's event was published (or could first exist), or
        after, and no line came within `grace` of both: the queue suppressed the event."""
        if call.retry_of is None:
            sent = self._event_sent.get(call.event_id)
        else:
            sent = self._call_sent.get(call.retry_of)
        if sent is None:
            return False
        since, objecting = sent
        objected = self._objected_at.get(key)
        if objected is not None and objected >= since:
            since = objected
        elif not objecting:
            return False
        return self._clock() - since >= self._grace

    def wait(self, record: ScheduledRecord, poll: Callable[[float], None]) -> float:
        """Wait (calling `poll(seconds)`, which serves the producer meanwhile) until the outcome
        may be published; the seconds it waited."""
        began = self._clock()
        if not self.begin(record):
            while not self.ready(record):
                poll(HOLD_POLL_SECONDS)
        return self._clock() - began

    def begin(self, record: ScheduledRecord) -> bool:
        """The call's outcome comes up: True if it may be published now; else it is held until
        `ready(record)` says so (the replay asks again, `wait` or `pace` with other records)."""
        call = record.call
        assert call is not None
        verdict = self.verdict(call, record.key)
        if verdict is None:
            self._held[call.task_id] = self._clock()
            return False
        self._end(call, verdict, None)
        return True

    def ready(self, record: ScheduledRecord) -> bool:
        """A held outcome may be published now (its verdict, or the timeout)."""
        call = record.call
        assert call is not None
        began = self._held[call.task_id]
        verdict = self.verdict(call, record.key)
        if verdict is None and self._clock() - began >= self._timeout:
            verdict = Verdict.TOO_LONG
            if self.stats.too_long == 0:
                log.warning(
                    "a call waited %.0f s for the call queue to decide its event %s: "
                    "published anyway (is the scorer running?)",
                    self._timeout,
                    call.event_id,
                )
            self._silent_at = self.decisions.lines
        if verdict is None:
            return False
        del self._held[call.task_id]
        self._end(call, verdict, self._clock() - began)
        return True

    def _end(self, call: CallRef, verdict: Verdict, waited: float | None) -> None:
        """Count a call whose outcome goes now; `waited`: how long it was held (None: not)."""
        stats = self.stats
        if waited is not None:
            stats.held += 1
            stats.held_by_attempt[call.attempt] += 1
            stats.held_seconds.append(waited)
        if verdict in (Verdict.TOO_LONG, Verdict.SILENT):
            stats.too_long += 1
        elif verdict is Verdict.SKIPPED:
            stats.skipped += 1
        if verdict is not Verdict.DECIDED:
            self._undecided.add(call.task_id)
