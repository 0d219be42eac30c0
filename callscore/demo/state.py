"""What the demo knows while it runs: counters, the call queue and the events log.

The state is built only from what the system publishes (the prospects, the prediction log, the
dead letters, the outcomes and the call queue, read from the beginning) plus the scorer's and
the monitor's /metrics and what the demo's dialer agent got from the API's POST /queue/claim
(`callscore.demo.agent`), so the screen (`callscore.demo.view`) shows what a dialer or an
operator would see: the call queue is what a dialer mirroring the compacted `call-queue` topic
has (`callqueue.view.QueueView`), best open tasks first.

The prospects topic holds the replay's records (`produced`, of `expected`) and the call queue's
retries (`retries`: a record with the `retry_of` header, sent when a call reached no decision).
An event the scorer handled is on the prediction log, or was suppressed (its prospect is on the
do-not-call list: no line anywhere, only the scorer's `suppressed` count), or dead-lettered: the
live `handled` adds the three, and `drained()` says when every record of the replay, every retry
and every outcome has been handled.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from pydantic import ValidationError

from callqueue.view import QueueView
from callscore.demo.agent import ClaimStats
from callscore.demo.phases import Phase
from core.settings import Settings
from core.topic_reader import Record
from schemas import WITHDRAWALS, CallTask, DeadLetter
from schemas.decode import InvalidEvent, decode_outcome

# Open tasks shown, best first.
QUEUE_ROWS = 5
# Events/s is measured over this many recent seconds.
RATE_WINDOW_SECONDS = 5.0
# Lines kept in the events log.
EVENT_LINES = 7
# The header of a retry the call queue sent (callqueue/rules.py): the task it retries.
RETRY_HEADER = "retry_of"


@dataclass
class VersionQuality:
    outcomes: int = 0
    roc_auc: float | None = None
    conversion: dict[str, float] = field(default_factory=dict)


@dataclass
class DemoEvent:
    elapsed: float
    text: str
    style: str = ""


class DemoState:
    """Counters, the call queue and the events log, updated from records and metrics."""

    def __init__(self, settings: Settings, started: float) -> None:
        self.settings = settings
        self.started = started
        self.produced = 0  # the replay's records on the prospects topic
        self.retries = 0  # the call queue's retries on it (a repeated one counted again)
        self.retry_ids: set[str] = set()  # the tasks they retry: one event each
        self.logged_ids: set[str] = set()  # event ids on the prediction log
        self.by_version: Counter[int] = Counter()
        self.dead: Counter[str] = Counter()
        self.outcomes = 0  # records on the outcomes topic (malformed ones too)
        self.calls: Counter[str] = Counter()  # valid outcomes by disposition
        self.queue = QueueView()  # the call-queue topic as a dialer mirrors it
        self.retry_tasks: dict[str, int] = {}  # task id -> attempt, of the tasks with attempt > 1
        self._open_retries: set[str] = set()  # prospects whose open task is such a retry
        self.queue_inputs: Counter[str] = Counter()  # the scorer's callscore_queue_inputs_total
        self.queue_withdrawn: Counter[str] = Counter()  # its callscore_queue_withdrawals_total
        self.outcomes_routed: Counter[str] = Counter()  # its outcomes' callscore_queue_routed_total
        self.claims = ClaimStats()  # what the demo's agent got from POST /queue/claim
        self.serving: int | None = None
        self.quality: dict[int, VersionQuality] = {}
        self.outcomes_dead: Counter[str] = Counter()
        self.events: deque[DemoEvent] = deque(maxlen=EVENT_LINES)
        self._unprinted: list[DemoEvent] = []
        self.matched = 0  # outcomes the monitor joined to their prediction
        self.monitor_outcomes = 0  # outcome records the monitor consumed
        self.monitor_predictions = 0  # prediction-log records it consumed
        self.quality_updates = 0  # times the monitor recomputed its quality gauges
        self.phase = Phase.STARTING
        self.expected: int | None = None  # prospect records the replay publishes
        self.expected_outcomes: int | None = None  # outcome records it publishes
        self._handled: deque[tuple[float, int]] = deque()

    # --- inputs ----------------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def logged(self) -> int:
        return len(self.logged_ids)

    @property
    def suppressed(self) -> int:
        """Events the scorer suppressed (do-not-call): on no topic, only in its count."""
        return self.queue_inputs["suppressed"]

    @property
    def scored(self) -> int:
        return self.logged + self.suppressed

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead.values())

    @property
    def handled(self) -> int:
        return self.scored + self.dead_lettered

    @property
    def recycled(self) -> int:
        """Calls without a decision whose prospect the queue sent back (the scorer's count)."""
        return self.queue_inputs["recycled"]

    @property
    def callbacks(self) -> int:
        """Calls that asked to be called back (at a time: the retry is due then)."""
        return self.calls["callback"]

    @property
    def open_retries(self) -> int:
        """Open tasks of a later attempt than the first."""
        return len(self._open_retries)

    def retry_tasks_by_attempt(self) -> Counter[int]:
        return Counter(self.retry_tasks.values())

    def drained(self) -> bool:
        """Every record of the replay read and handled; with the call queue, every outcome
        routed and applied by the queue too, and every retry it sent read and handled (the
        scorer's counts include the records it has sent, acknowledged)."""
        if self.expected is None or self.produced < self.expected:
            return False
        if self.expected_outcomes is not None and self.outcomes < self.expected_outcomes:
            return False
        if self.settings.queue_enabled:
            routed = self.outcomes_routed["routed"]
            applied = sum(self.queue_inputs[r] for r in ("closed", "recycled", "stale"))
            if routed + self.outcomes_routed["invalid"] < self.outcomes or applied < routed:
                return False
            if self.retries < self.recycled:
                return False
        return self.handled >= self.expected + len(self.retry_ids)

    def monitor_caught_up(self) -> bool:
        """The monitor consumed every outcome and every prediction-log line seen so far."""
        return self.monitor_outcomes >= self.outcomes and self.monitor_predictions >= self.logged

    def event(self, text: str, style: str = "") -> DemoEvent:
        item = DemoEvent(self.elapsed, text, style)
        self.events.append(item)
        self._unprinted.append(item)
        return item

    def drain_new_events(self) -> list[DemoEvent]:
        """Events not returned before (for the plain rendering, which prints each once)."""
        new, self._unprinted = self._unprinted, []
        return new

    def add_records(self, records: list[Record]) -> None:
        settings = self.settings
        withdrawn = self.queue.withdrawals()
        before = (self.retries, len(self.retry_tasks), self.callbacks)
        for record in records:
            if record.topic == settings.topic_prospects:
                self._prospect(record)
            elif record.topic == settings.topic_predictions:
                self._logged(record)
            elif record.topic == settings.topic_queue:
                self.queue.apply(record.key, record.value, record.headers)
                self._queued(record)
            elif record.topic == settings.topic_dead_letters:
                try:
                    letter = DeadLetter.model_validate_json(record.value or b"")
                except ValidationError:
                    continue
                self.dead[letter.error_kind] += 1
            elif record.topic == settings.topic_outcomes:
                self._outcome(record)
        self._first_withdrawals(withdrawn)
        self._firsts(*before)
        now = time.monotonic()
        self._handled.append((now, self.handled))
        while self._handled and self._handled[0][0] < now - RATE_WINDOW_SECONDS:
            self._handled.popleft()

    def _prospect(self, record: Record) -> None:
        retry_of = record.headers.get(RETRY_HEADER)
        if retry_of is None:
            self.produced += 1
        else:
            self.retries += 1
            self.retry_ids.add(retry_of.decode(errors="replace"))

    def _outcome(self, record: Record) -> None:
        self.outcomes += 1
        try:
            outcome = decode_outcome(record.value, self.settings.max_message_bytes)
        except InvalidEvent:
            return  # a malformed one: the monitor dead-letters it
        self.calls[outcome.disposition] += 1

    def _queued(self, record: Record) -> None:
        """A later attempt's task on the call-queue topic (a retry the queue queued)."""
        prospect_id = (record.key or b"").decode(errors="replace")
        self._open_retries.discard(prospect_id)
        if record.value is None:
            return  # withdrawn
        try:
            task = CallTask.model_validate_json(record.value)
        except ValidationError:
            return
        if task.attempt is not None and task.attempt > 1:
            self.retry_tasks[task.task_id] = task.attempt
            self._open_retries.add(prospect_id)

    def _logged(self, record: Record) -> None:
        try:
            line = json.loads(record.value or b"")
            event_id, version = line["event_id"], line["model_version"]
        except (ValueError, TypeError, KeyError):
            return
        if event_id in self.logged_ids:
            return  # a redelivered event (at-least-once): same line again, counted once
        self.logged_ids.add(event_id)
        self.by_version[int(version)] += 1

    def _first_withdrawals(self, before: dict[str, int]) -> None:
        """An event the first time the queue withdraws a task for each reason."""
        after = self.queue.withdrawals()
        for reason in WITHDRAWALS:
            if before.get(reason, 0) == 0 and after.get(reason, 0) > 0:
                self.event(f"call queue: first task withdrawn as {reason}", "cyan")

    def _firsts(self, retries: int, retry_tasks: int, callbacks: int) -> None:
        """An event for the first retry sent, queued, and the first callback asked for."""
        if retries == 0 and self.retries > 0:
            self.event("call queue: first retry sent (a call without a decision)", "cyan")
        if retry_tasks == 0 and self.retry_tasks:
            attempt = min(self.retry_tasks.values())
            self.event(f"call queue: first retry queued (attempt {attempt})", "cyan")
        if callbacks == 0 and self.callbacks > 0:
            self.event("dialer: first callback asked for", "cyan")

    def set_claims(self, stats: ClaimStats) -> None:
        """What the demo's agent got so far; an event for its first granted claim."""
        if self.claims.granted == 0 and stats.granted > 0 and stats.last:
            best = stats.last[0]
            more = f" and {stats.granted - 1} more" if stats.granted > 1 else ""
            self.event(
                f"{stats.agent} claimed {best.prospect_id}{more} (POST /queue/claim), held "
                f"until {best.lease_until:%H:%M:%S} UTC at most",
                "green",
            )
        self.claims = stats

    def set_serving(self, version: int | None) -> DemoEvent | None:
        """The scorer's current version; a change is a hot reload, returned as an event."""
        previous, self.serving = self.serving, version
        if version is None or version == previous:
            return None
        if previous is None:
            return self.event(f"scorer serving v{version}", "green")
        return self.event(f"hot reload: v{previous} → v{version} (no restart)", "bold magenta")

    def set_scorer_metrics(self, text: str) -> None:
        """The scorer's /metrics: what became of the call queue's inputs, by result; the tasks
        it withdrew, by reason; the outcomes it routed to the queue."""
        inputs: Counter[str] = Counter()
        withdrawn: Counter[str] = Counter()
        routed: Counter[str] = Counter()
        outcomes = self.settings.topic_outcomes
        for name, labels, value in prometheus_samples(text):
            if name == "callscore_queue_inputs_total" and "result" in labels:
                inputs[labels["result"]] += int(value)
            elif name == "callscore_queue_withdrawals_total" and "reason" in labels:
                withdrawn[labels["reason"]] += int(value)
            elif name == "callscore_queue_routed_total" and labels.get("source") == outcomes:
                routed[labels.get("result", "?")] += int(value)
        # Counters only grow: an answer without them (yet) changes nothing.
        if inputs:
            self.queue_inputs = inputs
        if withdrawn:
            self.queue_withdrawn = withdrawn
        if routed:
            self.outcomes_routed = routed

    def set_monitor_metrics(self, text: str) -> None:
        quality: dict[int, VersionQuality] = {}
        dead: Counter[str] = Counter()
        for name, labels, value in prometheus_samples(text):
            if name == "callscore_outcomes_dead_lettered_total":
                dead[labels.get("reason", "?")] += int(value)
                continue
            if name == "callscore_outcomes_matched_total":
                self.matched = int(value)
                continue
            if name == "callscore_outcomes_consumed_total":
                self.monitor_outcomes = int(value)
                continue
            if name == "callscore_online_predictions_consumed_total":
                self.monitor_predictions = int(value)
                continue
            if name == "callscore_online_quality_updates_total":
                self.quality_updates = int(value)
                continue
            version = labels.get("model_version")
            if version is None or not version.isdigit() or math.isnan(value):
                continue
            q = quality.setdefault(int(version), VersionQuality())
            if name == "callscore_online_outcomes":
                q.outcomes = int(value)
            elif name == "callscore_online_roc_auc":
                q.roc_auc = value
            elif name == "callscore_online_conversion_rate" and "priority" in labels:
                q.conversion[labels["priority"]] = value
        self.quality = {v: q for v, q in quality.items() if q.outcomes > 0}
        self.outcomes_dead = dead

    # --- derived ---------------------------------------------------------------------------------

    def rate(self) -> float:
        """Events handled (scored or dead-lettered) per second over the recent window."""
        if len(self._handled) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._handled[0], self._handled[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def top(self, rows: int = QUEUE_ROWS) -> list[CallTask]:
        """The best open tasks of the call queue, by score."""
        return self.queue.top(rows).tasks


def prometheus_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    samples = []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.append((sample.name, dict(sample.labels), float(sample.value)))
    except ValueError:
        return []
    return samples
