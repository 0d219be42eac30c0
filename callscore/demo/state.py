"""What the demo knows while it runs: counters, the call queue and the events log.

The state is built only from what the system publishes (the prospects, the prediction log, the
dead letters, the outcomes and the call queue, read from the beginning) plus the scorer's GET
/model and /metrics and the monitor's /metrics, so the screen (`callscore.demo.view`) shows what
a dialer or an operator would see: the call queue is what a dialer mirroring the compacted
`call-queue` topic has (`callqueue.view.QueueView`), best open tasks first.

An event the scorer handled is on the prediction log, or was suppressed (its prospect is on the
do-not-call list: no line anywhere, only the scorer's `suppressed` count), or dead-lettered: the
live `handled` adds the three, so the demo knows when the replay is drained.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from pydantic import ValidationError

from callqueue.view import QueueView
from callscore.demo.phases import Phase
from core.settings import Settings
from core.topic_reader import Record
from schemas import WITHDRAWALS, CallTask, DeadLetter

# Open tasks shown, best first.
QUEUE_ROWS = 5
# Events/s is measured over this many recent seconds.
RATE_WINDOW_SECONDS = 5.0
# Lines kept in the events log.
EVENT_LINES = 7


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
        self.produced = 0
        self.logged_ids: set[str] = set()  # event ids on the prediction log
        self.by_version: Counter[int] = Counter()
        self.dead: Counter[str] = Counter()
        self.outcomes = 0
        self.queue = QueueView()  # the call-queue topic as a dialer mirrors it
        self.queue_inputs: Counter[str] = Counter()  # the scorer's callscore_queue_inputs_total
        self.serving: int | None = None
        self.quality: dict[int, VersionQuality] = {}
        self.outcomes_dead: Counter[str] = Counter()
        self.events: deque[DemoEvent] = deque(maxlen=EVENT_LINES)
        self._unprinted: list[DemoEvent] = []
        self.matched = 0  # outcomes the monitor joined to their prediction
        self.quality_updates = 0  # times the monitor recomputed its quality gauges
        self.phase = Phase.STARTING
        self.expected: int | None = None  # prospect records the replay publishes
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
        for record in records:
            if record.topic == settings.topic_prospects:
                self.produced += 1
            elif record.topic == settings.topic_predictions:
                self._logged(record)
            elif record.topic == settings.topic_queue:
                self.queue.apply(record.key, record.value, record.headers)
            elif record.topic == settings.topic_dead_letters:
                try:
                    letter = DeadLetter.model_validate_json(record.value or b"")
                except ValidationError:
                    continue
                self.dead[letter.error_kind] += 1
            elif record.topic == settings.topic_outcomes:
                self.outcomes += 1
        self._first_withdrawals(withdrawn)
        now = time.monotonic()
        self._handled.append((now, self.handled))
        while self._handled and self._handled[0][0] < now - RATE_WINDOW_SECONDS:
            self._handled.popleft()

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

    def set_serving(self, version: int | None) -> DemoEvent | None:
        """The scorer's current version; a change is a hot reload, returned as an event."""
        previous, self.serving = self.serving, version
        if version is None or version == previous:
            return None
        if previous is None:
            return self.event(f"scorer serving v{version}", "green")
        return self.event(f"hot reload: v{previous} → v{version} (no restart)", "bold magenta")

    def set_scorer_metrics(self, text: str) -> None:
        """The scorer's /metrics: what became of the call queue's inputs, by result."""
        inputs: Counter[str] = Counter()
        for name, labels, value in prometheus_samples(text):
            if name == "callscore_queue_inputs_total" and "result" in labels:
                inputs[labels["result"]] += int(value)
        if inputs:  # counters only grow: an answer without them (yet) changes nothing
            self.queue_inputs = inputs

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
