"""The demo's closing check and summary: produced = scored + dead-lettered, from the topics.

The counts come from a fresh read of the topics once the scorer has stopped, not from the live
view: every record on the prospects topic must have become either a call task (one distinct
event id) or a dead letter (one distinct source partition and offset), and nothing else.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from core.settings import Settings
from core.topic_reader import Record, TopicReader
from schemas import CallTask, DeadLetter

READ_TIMEOUT_SECONDS = 60.0


@dataclass
class Reconciliation:
    produced: int = 0
    scored: int = 0
    dead_lettered: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    dead_by_kind: Counter[str] = field(default_factory=Counter)
    unknown_tasks: int = 0  # tasks whose event id is on no prospect record
    unknown_dead_letters: int = 0  # dead letters pointing at no prospect record

    @property
    def reconciles(self) -> bool:
        return (
            self.produced == self.scored + self.dead_lettered
            and self.unknown_tasks == 0
            and self.unknown_dead_letters == 0
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "produced": self.produced,
            "scored": self.scored,
            "dead_lettered": self.dead_lettered,
            "tiers": dict(self.tiers),
            "dead_by_kind": dict(self.dead_by_kind),
            "unknown_tasks": self.unknown_tasks,
            "unknown_dead_letters": self.unknown_dead_letters,
            "reconciles": self.reconciles,
        }


def count(settings: Settings, records: list[Record]) -> Reconciliation:
    prospects = settings.topic_prospects
    offsets: set[tuple[int, int]] = set()
    event_ids: set[str] = set()
    tasks: dict[str, CallTask] = {}
    letters: dict[tuple[int, int], DeadLetter] = {}
    for record in records:
        if record.topic == prospects:
            offsets.add((record.partition, record.offset))
            event_id = _event_id(record.value)
            if event_id is not None:
                event_ids.add(event_id)
        elif record.topic == settings.topic_dead_letters:
            try:
                letter = DeadLetter.model_validate_json(record.value or b"")
            except ValidationError:
                continue
            if letter.source_topic == prospects:
                letters[(letter.source_partition, letter.source_offset)] = letter
        else:
            try:
                task = CallTask.model_validate_json(record.value or b"")
            except ValidationError:
                continue
            tasks[task.event_id] = task
    result = Reconciliation(
        produced=len(offsets),
        scored=len(tasks),
        dead_lettered=len(letters),
        tiers=Counter(t.priority for t in tasks.values()),
        dead_by_kind=Counter(letter.error_kind for letter in letters.values()),
        unknown_tasks=len(set(tasks) - event_ids),
        unknown_dead_letters=len(set(letters) - offsets),
    )
    return result


def _event_id(value: bytes | None) -> str | None:
    try:
        document = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    event_id = document.get("event_id") if isinstance(document, dict) else None
    return event_id if isinstance(event_id, str) else None


def reconcile(settings: Settings, kafka_log: logging.Logger) -> Reconciliation:
    """Read the prospects, the call tasks and the dead letters to their end and count."""
    topics = [settings.topic_prospects, *settings.task_topics.values(), settings.topic_dead_letters]
    with TopicReader(settings, topics, group_prefix="callscore-demo-check", logger=kafka_log) as r:
        return count(settings, r.read_to_end(READ_TIMEOUT_SECONDS))


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))


def render_summary(
    summary: dict[str, Any], result: Reconciliation, warning: str | None
) -> RenderableType:
    title = f"callscore demo: done in {summary['elapsed_seconds']:.1f} s"
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    phases = summary["phase_seconds"]
    table.add_row(
        "time",
        f"{summary['elapsed_seconds']:.1f} s: start-up and training {phases['start_and_training']}"
        f" s, replay {phases['replay']} s, report and shutdown {phases['finishing']} s",
    )
    table.add_row("broker", summary["broker"])
    table.add_row("data", summary["data"])
    replay = summary["replay"]
    table.add_row("replay", f"{replay['from']} to {replay['to']} at x{replay['speedup']:,.0f}")
    table.add_row("produced", f"{result.produced:,} prospect events")
    versions = _counts({f"v{k}": v for k, v in summary["model_versions_scoring"].items()})
    table.add_row(
        "scored",
        f"{result.scored:,} call tasks ({_counts(dict(result.tiers))}; by model {versions})",
    )
    table.add_row(
        "dead-lettered", f"{result.dead_lettered:,} ({_counts(dict(result.dead_by_kind))})"
    )
    verdict = (
        Text("reconciles ✓", style="bold green")
        if result.reconciles
        else Text("DOES NOT RECONCILE ✗", style="bold red")
    )
    check = Text(
        f"produced {result.produced:,} = scored {result.scored:,} + dead-lettered "
        f"{result.dead_lettered:,}: "
    )
    check.append(verdict)
    if result.unknown_tasks or result.unknown_dead_letters:
        check.append(
            f" ({result.unknown_tasks} tasks and {result.unknown_dead_letters} dead letters "
            "match no prospect record)"
        )
    table.add_row("check", check)
    table.add_row("models published", "\n".join(summary["published"]) or "-")
    table.add_row("hot reloads", "\n".join(summary["hot_reloads"]) or "none seen")
    quality = [
        f"v{v}: {q['outcomes']:,} outcomes, online AUC "
        + ("-" if q["roc_auc"] is None else f"{q['roc_auc']:.3f}")
        for v, q in sorted(summary["online_quality"].items())
    ]
    table.add_row("online quality", "\n".join(quality) or "-")
    table.add_row("model card", summary["model_card"] or "missing (see logs)")
    table.add_row("quality report", summary["quality_report"] or "missing (see logs)")
    table.add_row("logs", summary["logs"])
    parts: list[RenderableType] = [table]
    if warning:
        parts.append(Text(f"⚠ {warning}", style="bold yellow"))
    return Group(*parts)
