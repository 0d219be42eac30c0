"""What the demo knows while it runs: counters, the call queue and the events log.

The state is built only from what the system publishes (the prospects, the call-task topics, the
dead letters and the outcomes, read from the beginning) plus the scorer's GET /model and the
monitor's /metrics, so the screen (`callscore.demo.view`) shows what a dialer or an operator
would see.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from pydantic import ValidationError

from callscore.demo.phases import Phase
from core.settings import Settings
from core.topic_reader import Record
from schemas import PRIORITIES, CallTask, DeadLetter

# Tasks shown per tier in the call queue.
QUEUE_ROWS = 4
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
        self.tier_of_topic = {topic: tier for tier, topic in settings.task_topics.items()}
        self.produced = 0
        self.scored_ids: set[str] = set()
        self.by_version: Counter[int] = Counter()
        self.by_tier: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()
        self.outcomes = 0
        self.queue: dict[str, dict[str, CallTask]] = {tier: {} for tier in PRIORITIES}
        self.called: set[str] = set()  # task ids whose outcome came before the task was seen
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
    def scored(self) -> int:
        return len(self.scored_ids)

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
        for record in records:
            if record.topic == settings.topic_prospects:
                self.produced += 1
            elif record.topic in self.tier_of_topic:
                self._task(record)
            elif record.topic == settings.topic_dead_letters:
                try:
                    letter = DeadLetter.model_validate_json(record.value or b"")
                except ValidationError:
                    continue
                self.dead[letter.error_kind] += 1
            elif record.topic == settings.topic_outcomes:
                self._outcome(record)
        now = time.monotonic()
        self._handled.append((now, self.handled))
        while self._handled and self._handled[0][0] < now - RATE_WINDOW_SECONDS:
            self._handled.popleft()

    def _task(self, record: Record) -> None:
        try:
            task = CallTask.model_validate_json(record.value or b"")
        except ValidationError:
            return
        if task.event_id in self.scored_ids:
            return  # a rescored event (at-least-once): same task id, counted once
        self.scored_ids.add(task.event_id)
        self.by_version[task.model_version] += 1
        self.by_tier[task.priority] += 1
        if task.task_id in self.called:
            self.called.discard(task.task_id)
        else:
            self.queue[task.priority][task.task_id] = task

    def _outcome(self, record: Record) -> None:
        try:
            task_id = json.loads(record.value or b"").get("task_id")
        except (ValueError, AttributeError):
            return  # malformed: the monitor dead-letters it
        if not isinstance(task_id, str):
            return
        self.outcomes += 1
        for tier in PRIORITIES:
            if self.queue[tier].pop(task_id, None) is not None:
                return
        self.called.add(task_id)

    def set_serving(self, version: int | None) -> DemoEvent | None:
        """The scorer's current version; a change is a hot reload, returned as an event."""
        previous, self.serving = self.serving, version
        if version is None or version == previous:
            return None
        if previous is None:
            return self.event(f"scorer serving v{version}", "green")
        return self.event(f"hot reload: v{previous} → v{version} (no restart)", "bold magenta")

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

    def top(self, tier: str, rows: int = QUEUE_ROWS) -> list[CallTask]:
        return sorted(self.queue[tier].values(), key=lambda t: -t.score)[:rows]


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
