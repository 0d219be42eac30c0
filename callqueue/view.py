"""A reader's view of the call queue: the open task per prospect, the best ones by score.

The call-queue topic is compacted and keyed by prospect_id: the newest record per key is the
prospect's open task (a CallTask as JSON) or a tombstone (no value; the reason in its
`withdrawn` header). A reader sees every record it has not compacted away (the local broker never
compacts), so `QueueView.apply` takes them in topic order and keeps the last per key.

What is kept per open task is its rank and its record as read (about 500 bytes a task; a parsed
CallTask costs 1.4 KB): each value is validated as a CallTask when applied, and only the tasks a
query returns are parsed again. `top` ranks with `heapq.nsmallest` over the open tasks of the
asked tier (or all) that are due (a task with `not_before`, a callback or a retry's delay, waits
until then): about 0.1 s at 1,000,000 open tasks, so callers on an event loop run it in a
thread. A lock lets one thread apply records while others query.

Withdrawals are counted when a tombstone removes an open task, so a record read twice (a batch
the scorer sent again) is not counted twice.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain

from pydantic import ValidationError

from schemas import PRIORITIES, WITHDRAWAL_HEADER, WITHDRAWALS, CallTask, Priority

# The reason counted for a tombstone without a readable `withdrawn` header.
UNKNOWN_REASON = "unknown"

# (-score, task_id, the record's value, when it is due and when its claim's lease ends, in epoch
# seconds): tuples compare in C, best first; task ids are unique, so two entries never compare
# further. Ties on score go to the smaller task_id.
_Entry = tuple[float, str, bytes, float, float]
ALWAYS_DUE = float("-inf")


@dataclass(frozen=True)
class QueueTop:
    """One answer: the best open tasks, best first, and the queue's counts when it was taken."""

    tasks: list[CallTask]
    open_by_tier: dict[Priority, int]
    withdrawals: dict[str, int]
    unreadable: int = 0
    not_due: int = 0  # open tasks of the tiers asked whose not_before is later

    @property
    def open_total(self) -> int:
        return sum(self.open_by_tier.values())


@dataclass
class QueueView:
    """Call-queue records in, the queue's open tasks out (no Kafka)."""

    records_applied: int = 0
    unreadable: int = 0
    _by_tier: dict[Priority, dict[str, _Entry]] = field(
        default_factory=lambda: {tier: {} for tier in PRIORITIES}
    )
    _withdrawals: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(
        self, key: bytes | str | None, value: bytes | None, headers: Mapping[str, bytes]
    ) -> None:
        """One record of the call-queue topic, in topic order.

        A record that is not a task for its key (no key, a value that is not a CallTask, a task
        of another prospect) is counted in `unreadable` and changes nothing.
        """
        prospect_id = key.decode(errors="replace") if isinstance(key, bytes) else key
        task = None
        if value is not None:
            try:
                task = CallTask.model_validate_json(value)
            except ValidationError:
                task = None
        with self._lock:
            self.records_applied += 1
            if not prospect_id or (value is not None and task is None):
                self.unreadable += 1
                return
            if task is not None and task.prospect_id != prospect_id:
                self.unreadable += 1
                return
            removed = self._remove(prospect_id)
            if task is not None:
                assert value is not None
                due = task.not_before.timestamp() if task.not_before else ALWAYS_DUE
                held = task.lease_until.timestamp() if task.lease_until else ALWAYS_DUE
                entry = (-task.score, task.task_id, value, due, held)
                self._by_tier[task.priority][prospect_id] = entry
            elif removed:
                self._withdrawals[_reason(headers)] += 1

    def _remove(self, prospect_id: str) -> bool:
        return any(tasks.pop(prospect_id, None) is not None for tasks in self._by_tier.values())

    def open_by_tier(self) -> dict[Priority, int]:
        with self._lock:
            return {tier: len(tasks) for tier, tasks in self._by_tier.items()}

    def withdrawals(self) -> dict[str, int]:
        """Open tasks withdrawn, by reason (every reason of WITHDRAWALS, 0 when none yet)."""
        with self._lock:
            return {reason: 0 for reason in WITHDRAWALS} | dict(self._withdrawals)

    def top(
        self,
        limit: int,
        tier: Priority | None = None,
        now: float | None = None,
        unclaimed: bool = False,
    ) -> QueueTop:
        """The `limit` best open tasks due at `now` (epoch seconds, default: the clock), of one
        tier or all, by score, highest first; with `unclaimed`, only those no claim holds at
        `now`."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        at = time.time() if now is None else now
        with self._lock:  # a copy, so ranking does not hold up the thread applying records
            tiers = PRIORITIES if tier is None else (tier,)
            entries = list(chain.from_iterable(self._by_tier[t].values() for t in tiers))
            open_by_tier = {t: len(tasks) for t, tasks in self._by_tier.items()}
            withdrawals = {reason: 0 for reason in WITHDRAWALS} | dict(self._withdrawals)
            unreadable = self.unreadable
        due = [entry for entry in entries if entry[3] <= at]
        free = [entry for entry in due if entry[4] <= at] if unclaimed else due
        best = heapq.nsmallest(limit, free)
        tasks = [CallTask.model_validate_json(entry[2]) for entry in best]
        return QueueTop(tasks, open_by_tier, withdrawals, unreadable, len(entries) - len(due))

    def task_of(self, prospect_id: str) -> CallTask | None:
        """The prospect's open task as the topic has it now."""
        with self._lock:
            for tasks in self._by_tier.values():
                if prospect_id in tasks:
                    return CallTask.model_validate_json(tasks[prospect_id][2])
        return None


def _reason(headers: Mapping[str, bytes]) -> str:
    raw = headers.get(WITHDRAWAL_HEADER)
    reason = raw.decode(errors="replace") if raw else ""
    return reason or UNKNOWN_REASON
