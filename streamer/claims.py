"""POST /queue/claim: an agent's next calls, each held for a lease, never held by two agents.

The API does not decide a claim. For each candidate (the best due task no claim holds, in its
mirror of `call-queue`) it proposes a `Claim` to the prospect's queue partition (a `claim`
input, callqueue/inputs.py) and reads the decision back from the mirror: the task shows the
claim's id (granted), or another claim holding it, another task or none (refused). The scorer
replica that owns the partition decides one input at a time (callqueue/rules.py), so claims
stay exclusive across any number of API processes; within one process a prospect proposed by
one request is not proposed by another until it is decided. Claims live in the queue's state and
topic, so they survive a restart of the API (or of the scorer).

A proposal still undecided when the request's wait ends (Settings.claim_wait_seconds) is not
returned; if it is granted later, its lease runs out unused and the task comes back.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from callqueue.inputs import input_record
from callqueue.view import QueueView
from core.settings import Settings
from core.topic_writer import TopicWriter
from schemas import CallTask, Claim, Priority

DECISION_POLL_SECONDS = 0.02
# Requests waiting for decisions at once: they mostly sleep, so threads are cheap; the event
# loop's default pool (a few threads) would make the 20th agent wait for the first ones.
CLAIM_THREADS = 64


@dataclass(frozen=True)
class ClaimResult:
    granted: list[CallTask]  # best first, each with this claim's id, agent and lease
    lease_until: datetime
    proposed: int
    refused: int  # another agent got there first, or the task changed
    undecided: int  # no decision seen within the wait


class ClaimDesk:
    def __init__(
        self,
        settings: Settings,
        queue_view: Callable[[], QueueView | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._view = queue_view
        self._clock = clock
        self._writer: TopicWriter | None = None
        self._lock = threading.Lock()  # one TopicWriter, and the set of proposals in flight
        self._proposed: set[str] = set()  # prospect ids
        self._threads = ThreadPoolExecutor(CLAIM_THREADS, thread_name_prefix="claims")

    async def claim_async(self, agent: str, n: int, tier: Priority | None) -> ClaimResult | None:
        """`claim` in one of the desk's threads, for a caller on an event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self.claim, agent, n, tier)

    def claim(self, agent: str, n: int, tier: Priority | None) -> ClaimResult | None:
        """Up to `n` tasks for `agent`; None while the mirror has not read the queue yet.
        Blocking (it waits for the decisions): callers on an event loop run it in a thread."""
        view = self._view()
        if view is None:
            return None
        settings = self._settings
        now = self._clock()
        requested_at = datetime.fromtimestamp(now, UTC)
        lease_until = requested_at + timedelta(seconds=settings.claim_lease_seconds)
        deadline = time.monotonic() + settings.claim_wait_seconds
        granted: list[CallTask] = []
        seen: set[str] = set()
        proposed = refused = undecided = 0
        while len(granted) < n and time.monotonic() < deadline:
            candidates = self._propose(view, n - len(granted), tier, now, seen)
            if not candidates:
                break
            claims = [
                Claim(
                    claim_id=str(uuid.uuid4()),
                    prospect_id=task.prospect_id,
                    task_id=task.task_id,
                    agent=agent,
                    requested_at=requested_at,
                    lease_until=lease_until,
                )
                for task in candidates
            ]
            proposed += len(claims)
            try:
                self._send(claims)
                decided = self._decisions(view, claims, deadline)
            finally:
                with self._lock:
                    self._proposed.difference_update(c.prospect_id for c in claims)
            for item in claims:
                task = decided.get(item.claim_id)
                if task is not None:
                    granted.append(task)
                elif item.claim_id in decided:
                    refused += 1
                else:
                    undecided += 1
        granted.sort(key=lambda t: (-t.score, t.task_id))
        return ClaimResult(granted, lease_until, proposed, refused, undecided)

    def _propose(
        self,
        view: QueueView,
        wanted: int,
        tier: Priority | None,
        now: float,
        seen: set[str],
    ) -> list[CallTask]:
        """The best due, unclaimed tasks not tried by this request nor proposed by another."""
        with self._lock:
            skip = seen | self._proposed
            limit = wanted + len(skip)
            candidates = view.top(limit, tier, now, unclaimed=True).tasks
            chosen = [t for t in candidates if t.prospect_id not in skip][:wanted]
            self._proposed.update(t.prospect_id for t in chosen)
        seen.update(t.prospect_id for t in chosen)
        return chosen

    def _send(self, claims: list[Claim]) -> None:
        settings = self._settings
        records = [
            input_record(
                settings.topic_queue_inputs,
                "claim",
                item.prospect_id,
                item.model_dump_json().encode(),
                settings.partitions,
            )
            for item in claims
        ]
        with self._lock:
            if self._writer is None:
                self._writer = TopicWriter(settings, "claims")
            self._writer.send_all(records)

    def _decisions(
        self, view: QueueView, claims: list[Claim], deadline: float
    ) -> dict[str, CallTask | None]:
        """claim id -> the granted task, or None when refused; undecided ones are absent."""
        decided: dict[str, CallTask | None] = {}
        while len(decided) < len(claims):
            for item in claims:
                if item.claim_id not in decided and (decision := _decision(view, item)):
                    decided[item.claim_id] = decision[0]
            if len(decided) == len(claims) or time.monotonic() >= deadline:
                break
            time.sleep(DECISION_POLL_SECONDS)
        return decided


def _decision(view: QueueView, item: Claim) -> tuple[CallTask | None] | None:
    """(task,) granted, (None,) refused, None not decided yet, as the mirror shows it."""
    task = view.task_of(item.prospect_id)
    if task is not None and task.claim_id == item.claim_id:
        return (task,)
    if task is None or task.task_id != item.task_id:
        return (None,)  # withdrawn or replaced: a claim on it can no longer be granted
    held = task.lease_until is not None and task.lease_until > item.requested_at
    if task.claim_id is not None and held:
        return (None,)  # another claim holds it
    return None
