"""What the demo shows while it runs: state fed from the topics and the HTTP endpoints, and two
renderings of it, a rich live view for a terminal and periodic plain lines for pipes and CI.

The state is built only from what the system publishes (the prospects, the call-task topics, the
dead letters and the outcomes, read from the beginning) plus the scorer's GET /model and the
monitor's /metrics, so the screen shows what a dialer or an operator would see.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from core.settings import Settings
from core.topic_reader import Record
from schemas import PRIORITIES, CallTask, DeadLetter

# Tasks shown per tier in the call queue.
QUEUE_ROWS = 4
# Events/s is measured over this many recent seconds.
RATE_WINDOW_SECONDS = 5.0
# Plain rendering: a status line at most this often (and only when something moved).
PLAIN_STATUS_SECONDS = 5.0
# Lines kept in the events log.
EVENT_LINES = 7
TIER_STYLE = {"high": "bold red", "medium": "yellow", "low": "dim"}


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
        self.phase = "starting"
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


# --- rendering ----------------------------------------------------------------------------------


def _dead_text(dead: Counter[str]) -> str:
    if not dead:
        return "0"
    parts = ", ".join(f"{kind} {n}" for kind, n in sorted(dead.items(), key=lambda kv: -kv[1]))
    return f"{sum(dead.values())} ({parts})"


def _quality_text(state: DemoState, separator: str = ", ") -> list[str]:
    """Per version: outcomes and online AUC, then conversion by tier (after `separator`)."""
    lines = []
    for version, q in sorted(state.quality.items()):
        auc = "-" if q.roc_auc is None else f"{q.roc_auc:.3f}"
        conversion = " ".join(
            f"{tier} {q.conversion[tier]:.0%}" for tier in PRIORITIES if tier in q.conversion
        )
        lines.append(
            f"v{version}: {q.outcomes:,} outcomes, AUC {auc}{separator}conversion {conversion}"
        )
    return lines


def _queue_table(state: DemoState) -> Table:
    table = Table(box=None, padding=(0, 1), show_edge=False)
    # Wide enough for the replay's ids, so the panel does not change width as they change.
    table.add_column("prospect", no_wrap=True, overflow="ellipsis", min_width=20)
    for column, width in (("score", 5), ("pct", 3), ("model", 5)):
        table.add_column(column, justify="right", no_wrap=True, min_width=width)
    for tier in PRIORITIES:
        style = TIER_STYLE[tier]
        waiting = f"{tier}: {len(state.queue[tier]):,} waiting"
        table.add_row(Text(waiting, style=f"{style} underline"), "", "", "")
        for task in state.top(tier):
            table.add_row(
                f"  {task.prospect_id}",
                f"{task.score:.3f}",
                f"{task.percentile:.0f}",
                f"v{task.model_version}",
                style=style,
            )
    return table


def _stats_table(state: DemoState) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    expected = f" / {state.expected:,}" if state.expected is not None else ""
    table.add_row("produced", f"{state.produced:,}{expected}")
    versions = ", ".join(f"v{v} {n:,}" for v, n in sorted(state.by_version.items()))
    table.add_row("scored", f"{state.scored:,}" + (f" ({versions})" if versions else ""))
    table.add_row("dead-lettered", _dead_text(state.dead))
    table.add_row("events/s", f"{state.rate():,.0f}")
    table.add_row("outcomes", f"{state.outcomes:,}")
    table.add_row("bad outcomes", _dead_text(state.outcomes_dead))
    serving = "-" if state.serving is None else f"v{state.serving}"
    table.add_row("model serving", Text(serving, style="bold green"))
    quality = _quality_text(state, separator="\n  ") or ["waiting for outcomes"]
    table.add_row("online quality", "\n".join(quality))
    return table


def render(state: DemoState, header: str, warning: str | None) -> RenderableType:
    """The live view: header, call queue | stream and quality, events log."""
    title = Text.assemble(
        ("callscore demo  ", "bold"),
        (f"{state.elapsed:5.1f} s  ", "bold cyan"),
        (state.phase, "cyan"),
        (f"\n{header}", "dim"),
    )
    # The queue as wide as its rows; the counters and quality take the rest.
    body = Table.grid(expand=True, padding=(0, 1))
    body.add_column()
    body.add_column(ratio=1)
    body.add_row(
        Panel(_queue_table(state), title="call queue (top per tier)", expand=False),
        Panel(_stats_table(state), title="stream"),
    )
    log = Text()
    for n, item in enumerate(state.events):
        log.append(("\n" if n else "") + f"{item.elapsed:6.1f} s  {item.text}", style=item.style)
    parts: list[RenderableType] = [title]
    if warning:
        parts.append(Text(f"⚠ {warning}", style="bold yellow"))
    parts += [body, Panel(log, title="events")]
    return Group(*parts)


def plain_status(state: DemoState) -> str:
    """One line for a log or a pipe."""
    queue = " ".join(f"{tier} {len(state.queue[tier])}" for tier in PRIORITIES)
    serving = "-" if state.serving is None else f"v{state.serving}"
    expected = f"/{state.expected}" if state.expected is not None else ""
    quality = "; ".join(_quality_text(state)) or "no outcomes yet"
    return (
        f"[{state.elapsed:5.1f} s] {state.phase}: produced {state.produced}{expected}, "
        f"scored {state.scored}, dead-lettered {_dead_text(state.dead)}, "
        f"{state.rate():.0f} events/s, model {serving}, queue {queue}, {quality}"
    )


def plain_event(item: DemoEvent) -> str:
    return f"[{item.elapsed:5.1f} s] {item.text}"


@contextmanager
def screen(
    console: Console, state: DemoState, header: str, warning: str | None
) -> Iterator[Callable[[], None]]:
    """A refresh() that redraws the live view (terminal) or prints plain lines (pipes, CI)."""
    if console.is_terminal:
        from rich.live import Live

        with Live(
            render(state, header, warning),
            console=console,
            refresh_per_second=4,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live:
            yield lambda: live.update(render(state, header, warning))
        return
    console.print(f"callscore demo · {header}", highlight=False, soft_wrap=True)
    if warning:
        console.print(f"WARNING: {warning}", highlight=False, soft_wrap=True)
    last: dict[str, Any] = {"at": 0.0, "status": None}

    def refresh(final: bool = False) -> None:
        for item in state.drain_new_events():
            console.print(plain_event(item), highlight=False, soft_wrap=True)
        now = time.monotonic()
        # A line when something moved, at most every few seconds (and always the last one).
        status = (state.phase, state.produced, state.handled, state.outcomes, state.serving)
        due = now - last["at"] >= PLAIN_STATUS_SECONDS or final
        if status != last["status"] and due:
            last.update(at=now, status=status)
            console.print(plain_status(state), highlight=False, soft_wrap=True)

    try:
        yield refresh
    finally:
        refresh(final=True)


def version_of(document: Any) -> int | None:
    """The version in a GET /model body, if any."""
    if isinstance(document, dict) and isinstance(document.get("version"), int):
        return int(document["version"])
    return None
