"""Every labelled prediction in a read of the prediction log and the outcomes topic, at once.

`feedback.join.OutcomeJoin` is the monitor's streaming join over a bounded window. The trainer
and the scheduler instead read both topics from their beginning at every run and join everything
they read: the result must not depend on the order in which partitions arrive, so a restarted
scheduler, or a training run a minute later, sees the same labels.

Invalid records are counted and their first messages kept: the monitor dead-letters invalid
outcomes; here they are only never used as labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from feedback.join import Labelled
from feedback.quality import latest_per_event
from schemas import CallOutcome, PredictionRecord, decode_outcome
from schemas.decode import DEFAULT_MAX_EVENT_BYTES, InvalidEvent, decode_prediction

# Messages kept per kind of invalid record (enough to diagnose, bounded on a poisoned topic).
KEPT_ERRORS = 3


@dataclass(frozen=True)
class LabelCounts:
    predictions: int = 0  # valid, one per event (the last one written)
    invalid_predictions: int = 0
    outcomes: int = 0  # valid
    invalid_outcomes: int = 0
    not_reached: int = 0  # valid outcomes of calls that did not reach the prospect: no label
    matched: int = 0  # reached outcomes whose prediction was read (re-calls included)
    unmatched: int = 0  # reached outcomes whose prediction was not read


@dataclass(frozen=True)
class LabelSet:
    predictions: list[PredictionRecord]  # one per event, in read order
    labelled: list[Labelled]  # one per event (its latest call), by (called_at, event_id)
    counts: LabelCounts
    errors: list[str] = field(default_factory=list)  # first messages of invalid records

    @property
    def labelled_until(self) -> datetime | None:
        """The newest call among the labelled predictions (event time)."""
        return self.labelled[-1].outcome.called_at if self.labelled else None

    def of_version(self, version: int) -> list[Labelled]:
        return [item for item in self.labelled if item.prediction.model_version == version]

    def predictions_of(self, version: int) -> list[PredictionRecord]:
        return [p for p in self.predictions if p.model_version == version]

    def summary(self) -> str:
        """What was read, for a command's last line."""
        c = self.counts
        return (
            f"read {c.predictions} predictions ({c.invalid_predictions} invalid skipped), "
            f"{c.outcomes} outcomes ({c.invalid_outcomes} invalid, {c.not_reached} not reached: "
            "skipped), "
            f"{c.matched} matched, {c.unmatched} unmatched"
        )

    def called_after(self, when: datetime | None) -> list[Labelled]:
        """Labelled predictions whose call is newer than `when` (all of them when None)."""
        return [item for item in self.labelled if when is None or item.outcome.called_at > when]


def label_set(
    predictions: Iterable[bytes | None],
    outcomes: Iterable[bytes | None],
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> LabelSet:
    """Decode both topics' values and join every valid outcome of a call that reached the
    prospect (`CallOutcome.reached`: the labels) to its prediction.

    An outcome names its event by `event_id`, else by `task_id`; an event predicted twice keeps
    its last prediction (same key, same partition: the last one written); an event called twice
    keeps its latest call.
    """
    errors: list[str] = []
    by_event: dict[str, PredictionRecord] = {}
    invalid_predictions = 0
    for raw in predictions:
        try:
            record, _event = decode_prediction(raw, max_bytes)
        except InvalidEvent as exc:
            invalid_predictions += 1
            if invalid_predictions <= KEPT_ERRORS:
                errors.append(exc.message)
            continue
        by_event.pop(record.event_id, None)  # re-inserted last: read order of the last write
        by_event[record.event_id] = record
    event_of_task = {p.task_id: event_id for event_id, p in by_event.items()}
    valid: list[CallOutcome] = []
    invalid_outcomes = 0
    for raw in outcomes:
        try:
            valid.append(decode_outcome(raw, max_bytes))
        except InvalidEvent as exc:
            invalid_outcomes += 1
            if invalid_outcomes <= KEPT_ERRORS:
                errors.append(exc.message)
    reached = [outcome for outcome in valid if outcome.reached]
    matched: list[Labelled] = []
    for outcome in reached:
        event_id = outcome.event_id if outcome.event_id in by_event else None
        event_id = event_id or event_of_task.get(outcome.task_id or "")
        if event_id is not None:
            matched.append(Labelled(by_event[event_id], outcome))
    labelled = sorted(
        latest_per_event(matched), key=lambda i: (i.outcome.called_at, i.prediction.event_id)
    )
    counts = LabelCounts(
        predictions=len(by_event),
        invalid_predictions=invalid_predictions,
        outcomes=len(valid),
        invalid_outcomes=invalid_outcomes,
        not_reached=len(valid) - len(reached),
        matched=len(matched),
        unmatched=len(reached) - len(matched),
    )
    return LabelSet(list(by_event.values()), labelled, counts, errors)
