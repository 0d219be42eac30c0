"""The monitor's pure core: `Monitor.handle(records, now)`, with no I/O (tests/test_monitor.py).

Prediction-log records enter the bounded `OutcomeJoin`, outcomes are decoded as strictly as
prospects (a bad one becomes a dead letter, never a label), manifests give each version's drift
baseline once their Ed25519 signature checks out against a trusted public key. What a batch
produced is a `MonitorResult`; monitor/worker.py sends its dead letters and counts it.

Accounting, per handled batch (checked whenever a MonitorResult is built):
outcomes = dead-lettered + matched on arrival + unmatched on arrival;
over the life of the process: consumed = dead-lettered + matched + waiting + expired.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from core.dead_letters import dead_letter_for, dead_letter_record
from core.settings import Settings
from core.topic_reader import Record
from core.topic_writer import Outgoing
from feedback.baselines import ManifestFilter
from feedback.join import Labelled, OutcomeJoin
from feedback.quality import Quality, quality
from schemas import DeadLetter, DriftBaseline, PredictionRecord, decode_outcome
from schemas.decode import InvalidEvent

# Versions with a quality window; the least recently active is forgotten first, so a long-lived
# monitor does not keep a window for every version ever published.
VERSIONS_TRACKED = 4

SourceKey = tuple[str, int, int]  # topic, partition, offset of a dead-lettered outcome


class MonitorAccountingError(RuntimeError):
    """A handled batch that would lose or invent an outcome."""


@dataclass
class MonitorCounts:
    predictions: int = 0
    predictions_invalid: int = 0
    outcomes: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    not_reached: int = 0  # valid outcomes of calls that did not reach the prospect: no label
    matched_on_arrival: int = 0
    unmatched_on_arrival: int = 0
    # waiting outcomes resolved by a prediction that arrived in this batch
    matched_late: int = 0
    # waiting outcomes given up by the join (its waiting buffer is bounded)
    outcomes_expired: int = 0
    manifests: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass(frozen=True)
class MonitorResult:
    """What one handled batch produced. `dead_letters` are all the batch's bad outcomes; `new`
    those not published by an earlier run, and `outgoing` their records, in the same order."""

    counts: MonitorCounts
    dead_letters: list[DeadLetter]
    new: list[DeadLetter]
    outgoing: list[Outgoing]
    labelled: list[Labelled]
    invalid_predictions: list[str]
    waiting: int
    predictions_in_window: int

    def __post_init__(self) -> None:
        c = self.counts
        dead = sum(c.dead_lettered.values())
        if c.outcomes != dead + c.not_reached + c.matched_on_arrival + c.unmatched_on_arrival:
            raise MonitorAccountingError(
                f"{c.outcomes} outcomes != dead-lettered {dead} + not reached {c.not_reached} + "
                f"matched {c.matched_on_arrival} + unmatched {c.unmatched_on_arrival}"
            )
        sent = len(self.new)
        if len(self.dead_letters) != dead or len(self.outgoing) != sent or sent > dead:
            raise MonitorAccountingError(
                f"{len(self.dead_letters)} dead letters ({len(self.new)} new, "
                f"{len(self.outgoing)} to send) for {dead} counted"
            )
        if len(self.labelled) != c.matched_on_arrival + c.matched_late:
            raise MonitorAccountingError(
                f"{len(self.labelled)} labelled for {c.matched_on_arrival} + {c.matched_late}"
            )


@dataclass
class VersionWindow:
    """The latest labelled predictions and predictions of one model version."""

    labelled: deque[Labelled]
    predictions: deque[PredictionRecord]


class Monitor:
    """The monitor's state and rules; fed records, it never touches Kafka or the network."""

    def __init__(
        self,
        settings: Settings,
        keys: dict[str, Ed25519PublicKey],
        already_dead_lettered: Collection[SourceKey] = (),
    ) -> None:
        self._settings = settings
        self._manifests = ManifestFilter(keys, settings.model_name)
        self._join = OutcomeJoin(
            settings.monitor_window_max_predictions,
            timedelta(days=settings.monitor_window_max_age_days),
        )
        self._versions: OrderedDict[int, VersionWindow] = OrderedDict()
        self.baselines: dict[int, DriftBaseline] = {}
        # Dead letters a previous run already published (read back at start): counted again,
        # not sent again, so a restart does not duplicate them.
        self._published: set[SourceKey] = set(already_dead_lettered)

    @property
    def waiting(self) -> int:
        return self._join.counts.unmatched_waiting

    @property
    def predictions_in_window(self) -> int:
        # OutcomeJoin keeps one record per event id; a replayed record (at-least-once) counts
        # once in `predictions` per arrival, so this is an upper bound when there are replays.
        counts = self._join.counts
        return counts.predictions - counts.predictions_expired

    def handle(self, records: Sequence[Record], now: datetime) -> MonitorResult:
        before = replace(self._join.counts)
        counts = MonitorCounts()
        letters: list[DeadLetter] = []
        new: list[DeadLetter] = []
        labelled: list[Labelled] = []
        invalid: list[str] = []
        topics = self._settings
        for record in records:
            if record.topic == topics.topic_predictions:
                counts.predictions += 1
                try:
                    prediction = PredictionRecord.model_validate_json(record.value or b"")
                except ValidationError as exc:
                    counts.predictions_invalid += 1
                    invalid.append(f"{record.topic}[{record.partition}]@{record.offset}: {exc}")
                    continue
                self._window(prediction.model_version).predictions.append(prediction)
                late = self._join.add_prediction(prediction)
                counts.matched_late += len(late)
                self._label(late, labelled)
            elif record.topic == topics.topic_outcomes:
                counts.outcomes += 1
                self._outcome(record, now, counts, letters, new, labelled)
            elif record.topic == topics.topic_models:
                check = self._manifests.check(record)
                counts.manifests[(check.result, check.reason)] += 1
                if check.version is not None and check.baseline is not None:
                    self.baselines[check.version] = check.baseline
            else:
                raise ValueError(f"the monitor does not read topic '{record.topic}'")
        counts.outcomes_expired = self._join.counts.outcomes_expired - before.outcomes_expired
        return MonitorResult(
            counts=counts,
            dead_letters=letters,
            new=new,
            outgoing=[
                dead_letter_record(self._settings.topic_outcome_dead_letters, letter)
                for letter in new
            ],
            labelled=labelled,
            invalid_predictions=invalid,
            waiting=self.waiting,
            predictions_in_window=self.predictions_in_window,
        )

    def _outcome(
        self,
        record: Record,
        now: datetime,
        counts: MonitorCounts,
        letters: list[DeadLetter],
        new: list[DeadLetter],
        labelled: list[Labelled],
    ) -> None:
        max_bytes = self._settings.max_message_bytes
        try:
            outcome = decode_outcome(record.value, max_bytes)
        except InvalidEvent as exc:
            letter = dead_letter_for(record, exc, max_bytes, now)
            counts.dead_lettered[letter.error_kind] += 1
            letters.append(letter)
            source = (record.topic, record.partition, record.offset)
            if source not in self._published:
                self._published.add(source)
                new.append(letter)
            return
        if not outcome.reached:  # no answer, busy, ...: the call says nothing about `y`
            counts.not_reached += 1
            return
        match = self._join.add_outcome(outcome)
        if match is None:
            counts.unmatched_on_arrival += 1
        else:
            counts.matched_on_arrival += 1
            self._label([match], labelled)

    def _label(self, matches: list[Labelled], labelled: list[Labelled]) -> None:
        for item in matches:
            self._window(item.prediction.model_version).labelled.append(item)
        labelled.extend(matches)

    def _window(self, version: int) -> VersionWindow:
        window = self._versions.get(version)
        if window is None:
            size = self._settings.monitor_quality_window
            window = VersionWindow(deque(maxlen=size), deque(maxlen=size))
            self._versions[version] = window
        self._versions.move_to_end(version)
        while len(self._versions) > VERSIONS_TRACKED:
            self._versions.popitem(last=False)
        return window

    def quality(self) -> dict[int, Quality]:
        """Online quality of every tracked version, with its baseline when one is trusted."""
        return {
            version: quality(
                list(window.labelled),
                list(window.predictions),
                self.baselines.get(version),
                min_rows_for_psi=self._settings.quality_min_outcomes,
            ).model_copy(update={"model_version": version})
            for version, window in sorted(self._versions.items())
        }
