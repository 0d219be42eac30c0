"""A replay plan onto Kafka: each record when the wall clock reaches its mapped event time, the
outcomes of the replay with attempts each held until the call queue has decided the event it
calls (simulator.hold).

A held call holds back the later records of its prospect (the key) with it, so a prospect's
records keep their order. The other prospects' records go on at their time while the oldest held
record is less than `hold_skew` (event time) behind them; then the replay's clock stops until it
goes. With no skew (the default) every record waits for a held call: the replay's order is the
plan's exactly, but the queue's round trips add up, one held call after the other (in the demo,
with a retry's call due milliseconds of wall time after the previous call, a thousand held calls
of 0.1-0.2 s each). With a skew of a few days they overlap: each prospect still waits for its
own tasks, and the call queue's stream time (the newest event time of a partition, which expires
tasks) runs ahead of a held call by less than the skew, far less than a task's lifetime
(CALLSCORE_TASK_TTL_DAYS) minus the outcome delay, so no task expires that would not have.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from callscore.simulator.hold import (
    HOLD_POLL_SECONDS,
    CallHold,
    Decisions,
    HoldStats,
    QueueDecisions,
)
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
    stopped_seconds: float = 0.0  # how long the replay's clock stood still for held calls

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
    hold_skew: timedelta = timedelta(0),
) -> ReplaySummary:
    """Publish the plan with one producer, each record when the wall clock reaches its mapped
    event time; `on_month(period, counts, wall_seconds)` after each month. With `hold` (and a
    plan with attempts, and the call queue on), each call's outcome waits until the queue has
    decided the event it calls, as `decisions` says (default: a `QueueDecisions` following the
    prediction log, started and stopped here), and the later records of its prospect wait too,
    those of the others for up to `hold_skew` of event time (module docstring). Raises
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
            hold_skew=_wall(hold_skew, speedup),
        )
    finally:
        if follower is not None:
            follower.stop()
    return summary


def _wall(skew: timedelta, speedup: float) -> float:
    """An event-time skew in wall seconds at `speedup` (inf: as fast as possible, no skew)."""
    return 0.0 if math.isinf(speedup) else skew.total_seconds() / speedup


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
    hold_skew: float = 0.0,
) -> ReplaySummary:
    """`run_replay`'s loop, without the broker: `send` each record when `clock` reaches its
    offset, `poll(seconds)` while waiting. A held outcome (`holder`) holds back its prospect's
    later records; another prospect's record waits for it only once it is `hold_skew` wall
    seconds (0: at once) behind that record's offset, and meanwhile the replay's clock stops:
    the offsets after it move by that much."""
    summary = ReplaySummary(hold=None if holder is None else holder.stats)
    held = HeldRecords(holder, send)
    started = clock()
    origin = started  # where the offsets count from: later by every stop of the clock
    current: str | None = None
    for record, offset in zip(plan, wall_offsets(plan, speedup), strict=True):
        if record.period != current:
            if current is not None and on_month is not None:
                on_month(current, summary.months[current], clock() - started)
            current = record.period
            summary.months[current] = MonthCounts()
        while (wait := origin + offset - clock()) > 0:
            # A held call goes soon after its event is decided, whatever the replay's pace.
            poll(min(wait, PACE_POLL_SECONDS if held.oldest is None else HOLD_POLL_SECONDS))
            held.release()
        stopped = clock()
        while (oldest := held.oldest) is not None and offset - oldest >= hold_skew:
            poll(HOLD_POLL_SECONDS)
            held.release()
        origin += clock() - stopped
        summary.stopped_seconds += clock() - stopped
        held.submit(record, offset)
        summary.months[current].add(record)
        if failed():
            break  # the flush below reports the broker's reason
    stopped = clock()
    while held.oldest is not None and not failed():  # the last held calls
        poll(HOLD_POLL_SECONDS)
        held.release()
    summary.stopped_seconds += clock() - stopped
    flush()
    summary.wall_seconds = clock() - started
    if current is not None and on_month is not None:
        on_month(current, summary.months[current], summary.wall_seconds)
    return summary


class HeldRecords:
    """The records held back, per prospect (key): a held call first, then that prospect's later
    records, each sent in the plan's order once the call before it may go."""

    def __init__(self, holder: CallHold | None, send: Callable[[ScheduledRecord], None]) -> None:
        self._holder = holder
        self._send = send
        # Per prospect: its records held back with their offsets; the first is a held call.
        self._waiting: dict[bytes, deque[tuple[ScheduledRecord, float]]] = {}

    @property
    def oldest(self) -> float | None:
        """The offset of the oldest record held back (None: nothing is)."""
        return min((queue[0][1] for queue in self._waiting.values()), default=None)

    def submit(self, record: ScheduledRecord, offset: float) -> None:
        """Send the record now, or hold it back: behind its prospect's held call, or as one."""
        queue = self._waiting.get(record.key)
        if queue is not None:
            queue.append((record, offset))
        elif self._may_go(record):
            self._publish(record)
        else:
            self._waiting[record.key] = deque([(record, offset)])

    def release(self) -> None:
        """Send what may go now, the prospect held longest first."""
        assert self._holder is not None or not self._waiting
        for key in sorted(self._waiting, key=lambda k: self._waiting[k][0][1]):
            queue = self._waiting[key]
            # The first is a held call; the ones after it have not come up yet.
            if self._holder is not None and not self._holder.ready(queue[0][0]):
                continue
            self._publish(queue.popleft()[0])
            while queue and self._may_go(queue[0][0]):
                self._publish(queue.popleft()[0])
            if not queue:
                del self._waiting[key]

    def _may_go(self, record: ScheduledRecord) -> bool:
        """A record comes up: True if it goes now; False: it is a call the holder holds."""
        holder = self._holder
        return holder is None or record.call is None or holder.begin(record)

    def _publish(self, record: ScheduledRecord) -> None:
        if self._holder is not None:
            self._holder.note(record)
        self._send(record)
