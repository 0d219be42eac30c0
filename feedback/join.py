"""Join call outcomes to the prediction log over a bounded window.

An outcome names its event by `event_id`, else by `task_id` (uuid5 of the event id). Predictions
are kept for at most `max_predictions` records and `max_age` of event time (the newest
`occurred_at` seen so far minus the age), oldest dropped first. An outcome that arrives before its
prediction (or whose prediction never comes, or has left the window) waits in a bounded buffer and
is counted as unmatched; it is matched if its prediction arrives later, never dropped silently.

Memory: a PredictionRecord with its 16 features is ~2.6 KiB as a Python object (measured by
bench/join_memory.py); the default window (Settings.monitor_window_max_predictions = 200,000) is
therefore ~505 MiB at most. Size it to the outcomes' delay: predictions older than the slowest
dialer's report are useless.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas import CallOutcome, PredictionRecord


@dataclass(frozen=True)
class Labelled:
    """A prediction and the outcome of the call it led to."""

    prediction: PredictionRecord
    outcome: CallOutcome

    @property
    def subscribed(self) -> bool:
        return bool(self.outcome.subscribed)  # only reached calls are labelled: never None


@dataclass
class JoinCounts:
    predictions: int = 0
    outcomes: int = 0
    matched: int = 0
    unmatched_waiting: int = 0
    predictions_expired: int = 0
    outcomes_expired: int = 0


class OutcomeJoin:
    def __init__(self, max_predictions: int, max_age: timedelta) -> None:
        self._max = max_predictions
        self._max_age = max_age
        self._by_event: OrderedDict[str, PredictionRecord] = OrderedDict()
        self._event_of_task: dict[str, str] = {}
        self._waiting: OrderedDict[int, CallOutcome] = OrderedDict()
        self._waiting_by_ref: dict[str, set[int]] = {}  # event_id or task_id -> waiting keys
        self._next_waiting = 0
        self._newest: datetime | None = None
        self.counts = JoinCounts()

    def add_prediction(self, prediction: PredictionRecord) -> list[Labelled]:
        """Remember a prediction; returns the waiting outcomes it resolves."""
        self.counts.predictions += 1
        self._by_event[prediction.event_id] = prediction
        self._by_event.move_to_end(prediction.event_id)
        self._event_of_task[prediction.task_id] = prediction.event_id
        if self._newest is None or prediction.occurred_at > self._newest:
            self._newest = prediction.occurred_at
        keys = self._waiting_by_ref.pop(prediction.event_id, set())
        keys |= self._waiting_by_ref.pop(prediction.task_id, set())
        labelled = [self._match(self._unwait(key)) for key in sorted(keys) if key in self._waiting]
        self._evict()
        return labelled

    def add_outcome(self, outcome: CallOutcome) -> Labelled | None:
        """The labelled prediction, or None when the outcome must wait (counted as unmatched)."""
        self.counts.outcomes += 1
        if self._find(outcome) is not None:
            return self._match(outcome)
        key = self._next_waiting
        self._next_waiting += 1
        self._waiting[key] = outcome
        for ref in (outcome.event_id, outcome.task_id):
            if ref is not None:
                self._waiting_by_ref.setdefault(ref, set()).add(key)
        while len(self._waiting) > self._max:
            self._unwait(next(iter(self._waiting)))
            self.counts.outcomes_expired += 1
        self.counts.unmatched_waiting = len(self._waiting)
        return None

    def _unwait(self, key: int) -> CallOutcome:
        outcome = self._waiting.pop(key)
        for ref in (outcome.event_id, outcome.task_id):
            keys = self._waiting_by_ref.get(ref or "")
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._waiting_by_ref[ref or ""]
        return outcome

    def _find(self, outcome: CallOutcome) -> PredictionRecord | None:
        if outcome.event_id is not None and outcome.event_id in self._by_event:
            return self._by_event[outcome.event_id]
        event_id = self._event_of_task.get(outcome.task_id or "")
        return self._by_event.get(event_id) if event_id is not None else None

    def _match(self, outcome: CallOutcome) -> Labelled:
        prediction = self._find(outcome)
        assert prediction is not None
        self.counts.matched += 1
        self.counts.unmatched_waiting = len(self._waiting)
        return Labelled(prediction, outcome)

    def _evict(self) -> None:
        oldest_kept = self._newest - self._max_age if self._newest is not None else None
        while self._by_event:
            event_id, first = next(iter(self._by_event.items()))
            too_many = len(self._by_event) > self._max
            too_old = oldest_kept is not None and first.occurred_at < oldest_kept
            if not (too_many or too_old):
                break
            del self._by_event[event_id]
            self._event_of_task.pop(first.task_id, None)
            self.counts.predictions_expired += 1
