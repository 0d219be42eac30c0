"""A replay plan onto Kafka: each record when the wall clock reaches its mapped event time, the
outcomes of the replay with attempts each held until the call queue has decided the event it
calls (simulator.hold)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from callscore.simulator.hold import CallHold, Decisions, HoldStats, QueueDecisions
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
    hold: HoldStats | None = None  # None: no outcome was held (one call per row, or no hold)

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
    hold: bool = True,
    decisions: Decisions | None = None,
) -> ReplaySummary:
    """Publish the plan with one producer, each record when the wall clock reaches its mapped
    event time; `on_month(period, counts, wall_seconds)` after each month. With `hold` (and a
    plan with attempts, and the call queue on), each call's outcome waits until the queue has
    decided the event it calls, as `decisions` says (default: a `QueueDecisions` following the
    prediction log, started and stopped here), and the records after it wait too. Raises
    `core.topic_writer.PublishError` (a BrokerUnavailableError) if a record is refused or not
    acknowledged."""
    ensure_topics(settings)
    writer = TopicWriter(settings, "the replay's records")
    follower: QueueDecisions | None = None
    holder: CallHold | None = None
    if hold and settings.queue_enabled and any(r.call is not None for r in plan):
        if decisions is None:
            decisions = follower = QueueDecisions(settings)
            follower.start()
        holder = CallHold(decisions)
    try:
        summary = pace(
            plan,
            speedup,
            send=lambda r: writer.send(Outgoing(r.topic(settings), r.key, r.value)),
            poll=writer.poll,
            failed=lambda: writer.failed,
            holder=holder,
            on_month=on_month,
            flush=lambda: writer.flush(FLUSH_TIMEOUT_SECONDS),
        )
    finally:
        if follower is not None:
            follower.stop()
    return summary


def pace(
    plan: list[ScheduledRecord],
    speedup: float,
    send: Callable[[ScheduledRecord], None],
    poll: Callable[[float], None],
    failed: Callable[[], bool] = lambda: False,
    holder: CallHold | None = None,
    on_month: OnMonth | None = None,
    flush: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
) -> ReplaySummary:
    """`run_replay`'s loop, without the broker: `send` each record when `clock` reaches its
    offset, `poll(seconds)` while waiting. A held outcome (`holder`) stops the replay's clock
    for as long as it waits: the offsets after it move by that much."""
    summary = ReplaySummary(hold=None if holder is None else holder.stats)
    started = clock()
    origin = started  # where the offsets count from: later by every hold
    current: str | None = None
    for record, offset in zip(plan, wall_offsets(plan, speedup), strict=True):
        if record.period != current:
            if current is not None and on_month is not None:
                on_month(current, summary.months[current], clock() - started)
            current = record.period
            summary.months[current] = MonthCounts()
        while (wait := origin + offset - clock()) > 0:
            poll(min(wait, PACE_POLL_SECONDS))
        if holder is not None:
            if record.call is not None:
                origin += holder.wait(record, poll)
            holder.note(record)
        send(record)
        summary.months[current].add(record)
        if failed():
            break  # the flush below reports the broker's reason
    flush()
    summary.wall_seconds = clock() - started
    if current is not None and on_month is not None:
        on_month(current, summary.months[current], summary.wall_seconds)
    return summary
