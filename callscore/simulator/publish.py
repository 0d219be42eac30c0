"""A replay plan onto Kafka: each record when the wall clock reaches its mapped event time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from callscore.simulator.plan import wall_offsets
from callscore.simulator.records import MonthCounts, ScheduledRecord
from core.kafka import ensure_topics
from core.settings import Settings
from core.topic_writer import Outgoing, TopicWriter

# How long the last records may take to be acknowledged once everything is produced.
FLUSH_TIMEOUT_SECONDS = 60.0
# The longest single wait for a record's time: delivery reports are served in between.
PACE_POLL_SECONDS = 0.1

OnMonth = Callable[[str, MonthCounts, float], None]


@dataclass
class ReplaySummary:
    months: dict[str, MonthCounts] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def total(self) -> MonthCounts:
        total = MonthCounts()
        for counts in self.months.values():
            total += counts
        return total


def run_replay(
    settings: Settings,
    plan: list[ScheduledRecord],
    speedup: float,
    on_month: OnMonth | None = None,
) -> ReplaySummary:
    """Publish the plan with one producer, each record when the wall clock reaches its mapped
    event time; `on_month(period, counts, wall_seconds)` after each month. Raises
    `core.topic_writer.PublishError` (a BrokerUnavailableError) if a record is refused or not
    acknowledged."""
    ensure_topics(settings)
    writer = TopicWriter(settings, "the replay's records")
    summary = ReplaySummary()
    started = time.monotonic()
    current: str | None = None
    for record, offset in zip(plan, wall_offsets(plan, speedup), strict=True):
        if record.period != current:
            if current is not None and on_month is not None:
                on_month(current, summary.months[current], time.monotonic() - started)
            current = record.period
            summary.months[current] = MonthCounts()
        _wait_until(writer, started + offset)
        writer.send(Outgoing(record.topic(settings), record.key, record.value))
        summary.months[current].add(record)
        if writer.failed:
            break  # the flush below reports the broker's reason
    writer.flush(FLUSH_TIMEOUT_SECONDS)
    summary.wall_seconds = time.monotonic() - started
    if current is not None and on_month is not None:
        on_month(current, summary.months[current], summary.wall_seconds)
    return summary


def _wait_until(writer: TopicWriter, due: float) -> None:
    """Sleep until `due` (monotonic) by serving delivery reports meanwhile."""
    while (wait := due - time.monotonic()) > 0:
        writer.poll(min(wait, PACE_POLL_SECONDS))
