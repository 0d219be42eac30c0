"""`callscore schedule`: retrain on an interval and when enough new labelled outcomes arrived.

Each loop iteration is one logged decision. Broker errors (counting outcomes, reading or
publishing manifests) are transient: logged, retried at the next iteration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import BrokerUnavailableError, CallscoreError
from core.settings import Settings
from core.topic_reader import TopicReader

log = logging.getLogger("callscore.schedule")
MAX_CHECK_SECONDS = 60.0


class OutcomeCounter:
    """Counts records on the outcomes topic since the previous `take()` (no group commits)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._reader: TopicReader | None = None
        self._pending = 0

    def take(self, timeout: float = 2.0) -> int:
        """New outcomes since the last call (counting continues after broker errors)."""
        from confluent_kafka import KafkaException

        try:
            if self._reader is None:
                self._reader = TopicReader(
                    self._settings, [self._settings.topic_outcomes], "callscore-schedule"
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                records = self._reader.poll(0.2, max_records=1000)
                self._pending += len(records)
                if not records:
                    break
        except KafkaException as exc:
            raise BrokerUnavailableError(f"counting outcomes: {exc.args[0]}") from None
        count, self._pending = self._pending, 0
        return count

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


@dataclass
class Scheduler:
    settings: Settings
    train: Callable[[str], Any]  # reason -> anything; raises CallscoreError on failure
    count_new_outcomes: Callable[[], int]
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    decisions: list[dict[str, Any]] = field(default_factory=list)
    _last_train: float | None = None
    _outcomes: int = 0

    @classmethod
    def for_cli(cls, settings: Settings, data: str | None, out: Path) -> Scheduler:
        from trainer.data import load_bank, resolve_data_path
        from trainer.train import TrainOptions, run_training

        def train(reason: str) -> Any:
            path = resolve_data_path(Path(data) if data else None, settings)
            frame, sha = load_bank(path)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            result = run_training(settings, frame, sha, TrainOptions(out=out / stamp))
            return result.card.gate.model_dump()

        counter = OutcomeCounter(settings)
        return cls(settings, train, counter.take)

    def due(self) -> str | None:
        """Why a retrain is due now, or None."""
        if self._last_train is None:
            return "first run"
        elapsed = self.clock() - self._last_train
        if elapsed >= self.settings.retrain_interval_seconds:
            return f"{elapsed:.0f} s since the last training"
        if self._outcomes >= self.settings.retrain_min_new_outcomes:
            return f"{self._outcomes} new labelled outcomes"
        return None

    def step(self) -> dict[str, Any]:
        """One decision: count outcomes, maybe train; never raises for user/broker errors."""
        decision: dict[str, Any] = {"at": datetime.now(UTC).isoformat()}
        try:
            self._outcomes += self.count_new_outcomes()
        except CallscoreError as exc:
            log.warning("could not count outcomes (will retry): %s", exc)
            decision["outcomes_error"] = str(exc)
        reason = self.due()
        decision |= {"new_outcomes": self._outcomes, "reason": reason}
        if reason is None:
            decision["action"] = "wait"
        else:
            try:
                decision["result"] = self.train(reason)
                decision["action"] = "trained"
                self._last_train = self.clock()
                self._outcomes = 0
            except CallscoreError as exc:
                decision["action"] = "failed"
                decision["error"] = str(exc)
        log.info("schedule decision: %s", decision)
        self.decisions.append(decision)
        return decision

    def run(self, max_runs: int | None = None) -> list[dict[str, Any]]:
        check_every = min(self.settings.retrain_interval_seconds, MAX_CHECK_SECONDS)
        runs = 0
        while max_runs is None or runs < max_runs:
            self.step()
            runs += 1
            if max_runs is None or runs < max_runs:
                self.sleep(check_every)
        return self.decisions
