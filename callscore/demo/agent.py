"""The demo's dialer agent: POST /queue/claim to `callscore api` every couple of seconds.

An in-house dialer's agent asks for its next calls (`{"agent": "demo-agent", "n": 3}`); the call
queue grants each task to one agent at a time, held until the call's outcome or its lease
(schemas.api ClaimAnswer). The demo's agent makes no call: the simulator keeps calling every
task, and its outcomes end the claims; the agent only shows that claims are granted, one holder
at a time, with a lease. A 503 (the API's mirror still reading the call queue) is skipped.

The requests run in a thread of their own (a claim waits up to CALLSCORE_CLAIM_WAIT_SECONDS for
its decisions): the view's tick only copies `stats()`, so it is never held up by one.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import datetime

from core.settings import Settings
from schemas.api import ClaimAnswer, ClaimRequest

AGENT = "demo-agent"
CLAIM_EVERY_SECONDS = 2.0
CLAIM_N = 3
# The last granted tasks kept (and shown), newest first.
LAST_CLAIMS = 3
# Beyond the API's own wait for the decisions: its answer's way back.
ANSWER_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class ClaimedTask:
    """One granted claim as the view shows it."""

    agent: str
    prospect_id: str
    score: float
    priority: str
    lease_until: datetime


@dataclass(frozen=True)
class ClaimStats:
    """What the agent's requests got so far (tasks granted, refused, undecided: per proposal)."""

    agent: str = AGENT
    requests: int = 0  # answered (200)
    granted: int = 0
    refused: int = 0  # another agent got there first, or the task changed
    undecided: int = 0  # not decided within the API's wait
    skipped: int = 0  # 503: the API's mirror still reading the call queue
    unanswered: int = 0  # no answer (not up yet, stopping) or an unexpected one
    last: tuple[ClaimedTask, ...] = ()  # newest first

    def answered(self, answer: ClaimAnswer) -> ClaimStats:
        """These stats with one more answer."""
        claimed = tuple(
            ClaimedTask(
                task.claimed_by or answer.agent,
                task.prospect_id,
                task.score,
                task.priority,
                task.lease_until or answer.lease_until,
            )
            for task in answer.tasks
        )
        return replace(
            self,
            requests=self.requests + 1,
            granted=self.granted + len(answer.tasks),
            refused=self.refused + answer.refused,
            undecided=self.undecided + answer.undecided,
            last=(claimed + self.last)[:LAST_CLAIMS],
        )


class DemoAgent:
    """Claims `n` tasks every `every` seconds between `start()` and `stop()`."""

    def __init__(
        self,
        settings: Settings,
        agent: str = AGENT,
        n: int = CLAIM_N,
        every: float = CLAIM_EVERY_SECONDS,
    ) -> None:
        self.url = f"http://127.0.0.1:{settings.api_port}/queue/claim"
        self._body = ClaimRequest(agent=agent, n=n).model_dump_json().encode()
        self._headers = {"Content-Type": "application/json"}
        if settings.api_token is not None:
            self._headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
        self._timeout = settings.claim_wait_seconds + ANSWER_MARGIN_SECONDS
        self._every = every
        self._stats = ClaimStats(agent)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="demo-agent", daemon=True)
            self._thread.start()

    def stop(self, wait: float = 1.0) -> None:
        """No more requests; a request in flight may finish within `wait` (else it ends with the
        API, and the thread with the demo: it is a daemon)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(wait)

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stopping.is_set()

    def stats(self) -> ClaimStats:
        with self._lock:
            return self._stats

    def claim_once(self) -> None:
        """One request, counted (blocking: up to the API's wait for its decisions)."""
        request = urllib.request.Request(
            self.url, data=self._body, headers=self._headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as reply:
                answer = ClaimAnswer.model_validate_json(reply.read())
        except urllib.error.HTTPError as exc:
            self._count(skipped=exc.code == 503)
        except (OSError, ValueError):  # no answer, or not a ClaimAnswer (a ValidationError)
            self._count(skipped=False)
        else:
            with self._lock:
                self._stats = self._stats.answered(answer)

    def _count(self, skipped: bool) -> None:
        with self._lock:
            s = self._stats
            if skipped:
                self._stats = replace(s, skipped=s.skipped + 1)
            else:
                self._stats = replace(s, unanswered=s.unanswered + 1)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.claim_once()
            self._stopping.wait(self._every)
