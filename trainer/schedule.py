"""`callscore schedule`: retrain the served model when it is stale, drifting or failing; otherwise
recalibrate it once it has enough fresh outcomes.

Every check derives its state from Kafka, nothing from memory: the served manifest from the model
topic, the labelled predictions from the prediction log and the outcomes topic (both read from
their beginning). A restarted scheduler therefore decides exactly as the one it replaces. Times
are event time (the outcomes' own `called_at`), so a replay that plays months in seconds retrains
as a live system would over those months.

Retrain triggers, about the served version (see Settings.retrain_*):
- interval: the newest labelled outcome is at least `retrain_interval_seconds` newer than the
  version's training data (its `labelled_until`, else the end of its training window);
- outcomes: at least `retrain_min_new_outcomes` labelled outcomes called since then;
- drift: the PSI of its scores (over at least `quality_min_outcomes` of its predictions) against
  its training distribution exceeds `retrain_psi_threshold`, and at least `quality_min_outcomes`
  outcomes newer than its data exist to learn the shift from;
- quality: its online ROC-AUC is below `retrain_auc_floor` (over at least `quality_min_outcomes`
  of its labelled predictions).

Recalibrate, when no retrain is due: at least `recalibration_min_outcomes` fresh outcomes of
the served version, and its scores off beyond noise on the latest `recalibration_window` of
them (expected against observed conversions, |z| > `recalibration_min_z`: refitting a
calibration that holds chases the month's noise).

The one thing kept in memory is a retrain the gate refused: until the outcomes that refusal saw
are followed by an interval's or a batch's worth of new ones, the same triggers do not retrain
again on the same data. A restart forgets it and repeats that retrain once, nothing more.

Only outcomes matched to a prediction count (a valid outcome whose prediction never reached the
log cannot become training data, so it must not keep a retrain due either).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from core.errors import CallscoreError
from core.settings import Settings
from feedback.label_columns import LabelColumns
from feedback.psi import psi
from feedback.quality import roc_auc
from feedback.significance import CalibrationGap, calibration_gap
from registry.keys import trusted_keys
from registry.model_topic import current_manifest, read_model_records
from schemas import ModelManifest

if TYPE_CHECKING:
    from trainer.history import LabelHistory

log = logging.getLogger("callscore.schedule")

Action = Literal["retrain", "recalibrate", "wait", "error"]
SearchChoice = Literal["reference", "fast", "full"]
SECONDS_PER_DAY = 86_400.0
KEPT_DECISIONS = 1_000


@dataclass(frozen=True)
class Observation:
    """Everything a decision depends on, as read from the topics."""

    served: ModelManifest | None
    labels: LabelColumns  # without features: a check reads a few narrow columns


@dataclass(frozen=True)
class TrainAttempt:
    published: ModelManifest | None
    gate_reason: str
    labelled_until: datetime | None = None  # the newest outcome it trained on


class Signals(BaseModel):
    """The numbers behind a decision, all about the served version."""

    model_config = ConfigDict(frozen=True)

    served_version: int | None = None
    data_until: AwareDatetime | None = None  # labelled_until, else its training window's end
    newest_outcome_at: AwareDatetime | None = None  # newest labelled outcome (any version)
    gap_days: float | None = None  # newest_outcome_at - data_until
    new_outcomes: int = 0  # labelled outcomes called after data_until (any version)
    predictions: int = 0  # of the served version
    score_psi: float | None = None  # None below quality_min_outcomes predictions
    labelled: int = 0  # labelled predictions of the served version
    online_auc: float | None = None  # None below quality_min_outcomes labelled
    fresh_labelled: int = 0  # of those, called after data_until: the recalibration's count
    # Its latest recalibration_window labelled outcomes against their served scores (None below
    # recalibration_min_outcomes): a recalibration needs the gap to be more than noise.
    calibration: CalibrationGap | None = None

    def line(self) -> str:
        def number(value: float | None, digits: int = 3) -> str:
            return "-" if value is None else f"{value:.{digits}f}"

        when = self.data_until.date().isoformat() if self.data_until else "-"
        newest = self.newest_outcome_at.date().isoformat() if self.newest_outcome_at else "-"
        return (
            f"served=v{self.served_version or '-'} data_until={when} newest_outcome={newest} "
            f"gap_days={number(self.gap_days, 1)} new_outcomes={self.new_outcomes} "
            f"psi={number(self.score_psi)}/{self.predictions} "
            f"auc={number(self.online_auc)}/{self.labelled} fresh={self.fresh_labelled} "
            f"calibration_z={number(self.calibration.z if self.calibration else None, 2)}"
        )


class Decision(BaseModel):
    """One check: what was decided, why, on which numbers, and what came of it."""

    model_config = ConfigDict(frozen=True)

    action: Action
    reason: str  # the triggers that fired joined by '; ', or why nothing is due
    triggers: list[str] = []
    signals: Signals | None = None
    result: str = ""  # what acting on it did
    published_version: int | None = None
    failed: bool = False
    at: AwareDatetime  # wall clock of the check

    def line(self) -> str:
        signals = f" [{self.signals.line()}]" if self.signals else ""
        result = f" -> {self.result}" if self.result else ""
        return f"schedule: {self.action} ({self.reason}){signals}{result}"

    def same_decision(self) -> dict[str, object]:
        """The decision without its wall-clock time and outcome, to compare two checks."""
        return self.model_dump(include={"action", "reason", "triggers", "signals"})


def data_until(manifest: ModelManifest) -> datetime:
    """Event time the version's training data reaches: its newest outcome, else the first
    instant after its training window's last month."""
    if manifest.labelled_until is not None:
        return manifest.labelled_until
    year, month = (int(part) for part in manifest.training_window.end.split("-"))
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def signals(settings: Settings, observation: Observation) -> Signals:
    labels = observation.labels
    served = observation.served
    newest = labels.labelled_until
    if served is None:
        return Signals(newest_outcome_at=newest, new_outcomes=labels.labelled_count)
    since = data_until(served)
    own = labels.of_version(served.version)
    scores = own.prediction_column("score").astype(float)
    enough = settings.quality_min_outcomes
    score_psi = None
    if served.drift_baseline is not None and len(scores) >= enough:
        score_psi = psi(served.drift_baseline.score, scores)
    online_auc = None
    subscribed = own.labelled_column("subscribed").astype(bool)
    served_scores = own.labelled_column("score").astype(float)
    if own.labelled_count >= enough:
        online_auc = roc_auc(subscribed, served_scores)
    calibration = None
    if own.labelled_count >= settings.recalibration_min_outcomes:
        latest = slice(-settings.recalibration_window, None)  # what a recalibration fits on
        calibration = calibration_gap(served_scores[latest], subscribed[latest])
    return Signals(
        served_version=served.version,
        data_until=since,
        newest_outcome_at=newest,
        gap_days=(newest - since).total_seconds() / SECONDS_PER_DAY if newest else None,
        new_outcomes=labels.count_called_after(since),
        predictions=len(scores),
        score_psi=score_psi,
        labelled=own.labelled_count,
        online_auc=online_auc,
        fresh_labelled=own.count_called_after(since),
        calibration=calibration,
    )


def drifting(settings: Settings, s: Signals) -> bool:
    return s.score_psi is not None and s.score_psi > settings.retrain_psi_threshold


def retrain_triggers(
    settings: Settings, s: Signals, labels: LabelColumns, refused_until: datetime | None = None
) -> list[str]:
    """Every retrain trigger that fires, each with its numbers.

    `refused_until`: the newest outcome a refused retrain of the served version trained on;
    then only enough outcomes after it (interval or count) retrain again.
    """
    if s.served_version is None:
        return ["no served model"]
    interval_days = settings.retrain_interval_seconds / SECONDS_PER_DAY
    gap_days: float | None
    if refused_until is not None:
        gap = (labels.labelled_until or refused_until) - refused_until
        new = labels.count_called_after(refused_until)
        gap_days = gap.total_seconds() / SECONDS_PER_DAY
        after = "since the refused retrain"
    else:
        gap_days, new, after = s.gap_days, s.new_outcomes, "after the training data"
    fired = []
    if gap_days is not None and gap_days >= interval_days:
        fired.append(f"interval: newest outcome {gap_days:.1f} days {after} (>= {interval_days:g})")
    if new >= settings.retrain_min_new_outcomes:
        fired.append(f"outcomes: {new} new {after} (>= {settings.retrain_min_new_outcomes})")
    if refused_until is not None:
        return fired
    if drifting(settings, s) and s.new_outcomes >= settings.quality_min_outcomes:
        fired.append(
            f"drift: score PSI {s.score_psi:.3f} over {s.predictions} predictions "
            f"(> {settings.retrain_psi_threshold:g})"
        )
    if s.online_auc is not None and s.online_auc < settings.retrain_auc_floor:
        fired.append(
            f"quality: online ROC-AUC {s.online_auc:.3f} over {s.labelled} outcomes "
            f"(< {settings.retrain_auc_floor:g})"
        )
    return fired


def decide(
    settings: Settings, observation: Observation, refused_until: datetime | None = None
) -> Decision:
    """Retrain, recalibrate or wait: a pure function of what was read (and a refused retrain)."""
    s = signals(settings, observation)
    now = datetime.now(UTC)
    pinned = settings.pinned_model_version
    if pinned is not None:
        # A new version would not be served: the operator pinned this one (a rollback).
        why = f"scorers are pinned to v{pinned} (CALLSCORE_PINNED_MODEL_VERSION): nothing to do"
        return Decision(action="wait", reason=why, signals=s, at=now)
    triggers = retrain_triggers(settings, s, observation.labels, refused_until)
    if triggers:
        return Decision(
            action="retrain", reason="; ".join(triggers), triggers=triggers, signals=s, at=now
        )
    why = "no trigger"
    z = settings.recalibration_min_z
    if s.fresh_labelled >= settings.recalibration_min_outcomes and s.calibration is not None:
        if s.calibration.significant(z):
            reason = (
                f"recalibrate: {s.fresh_labelled} fresh outcomes of v{s.served_version} "
                f"(>= {settings.recalibration_min_outcomes}), its scores are off: "
                f"{s.calibration.text()}, |z| > {z:g}"
            )
            return Decision(
                action="recalibrate", reason=reason, triggers=[reason], signals=s, at=now
            )
        why = (
            f"no trigger; v{s.served_version}'s calibration holds: {s.calibration.text()}, "
            f"|z| <= {z:g}"
        )
    if drifting(settings, s) and refused_until is None:
        # A retrain on the same labelled data would relearn the same model: drift alone waits
        # for outcomes of the drifted population.
        why = (
            f"no trigger; score PSI {s.score_psi:.3f} drifts, but {s.new_outcomes} new outcomes "
            f"are too few to learn from (< {settings.quality_min_outcomes})"
        )
    if refused_until is not None:
        why = (
            f"no trigger; the gate kept v{s.served_version} on outcomes up to "
            f"{refused_until.isoformat()}"
        )
    return Decision(action="wait", reason=why, signals=s, at=now)


def observe(settings: Settings, history: LabelHistory | None = None) -> Observation:
    """The served manifest (pinned version respected) and every labelled prediction, now;
    `history` keeps what earlier checks read, so a check reads only what is new."""
    from trainer.history import LabelHistory

    records = read_model_records(settings)
    served = current_manifest(
        records, settings.model_name, trusted_keys(settings), settings.pinned_model_version
    )
    return Observation(served, (history or LabelHistory(settings)).read())


@dataclass
class Scheduler:
    settings: Settings
    observe: Callable[[], Observation]
    # reason, the check's labels (a training reads them again, with the features);
    # CallscoreError on failure
    train: Callable[[str, LabelColumns], TrainAttempt]
    recalibrate: Callable[[LabelColumns], ModelManifest | None]
    sleep: Callable[[float], None] = time.sleep
    # The latest decisions (a scheduler runs for months: one per check would grow forever).
    decisions: deque[Decision] = field(default_factory=lambda: deque(maxlen=KEPT_DECISIONS))
    # (served version, newest outcome it trained on) of the last retrain the gate refused.
    _refused: tuple[int, datetime] | None = None

    @classmethod
    def for_cli(
        cls, settings: Settings, data: str | None, out: Path, search: SearchChoice = "reference"
    ) -> Scheduler:
        def train(reason: str, _check: LabelColumns) -> TrainAttempt:
            from trainer.data import load_bank, resolve_data_path
            from trainer.train import TrainOptions, run_training

            path = resolve_data_path(Path(data) if data else None, settings)
            frame, sha = load_bank(path)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            options = TrainOptions(
                out=out / stamp,
                fast=search == "fast",
                reference=search == "reference",
                reason=reason,
            )
            result = run_training(settings, frame, sha, options)
            until = result.card.sources.labelled_until if result.card.sources else None
            return TrainAttempt(result.manifest, result.card.gate.reason, until)

        def recalibrate(labels: LabelColumns) -> ModelManifest | None:
            # Written alongside this module (feedback/recalibrate.py); imported when used.
            from feedback.recalibrate import recalibrate

            return recalibrate(settings, labels)

        from trainer.history import LabelHistory

        history = LabelHistory(settings)  # the state between checks, derived again at a restart
        return cls(settings, lambda: observe(settings, history), train, recalibrate)

    def refused_until(self, served: ModelManifest | None) -> datetime | None:
        if served is None or self._refused is None or self._refused[0] != served.version:
            return None
        return self._refused[1]

    def check(self) -> tuple[Decision, Observation | None]:
        """Read the topics and decide, without acting; broker errors become an 'error' decision."""
        try:
            observation = self.observe()
        except CallscoreError as exc:
            return Decision(
                action="error",
                reason=f"could not read the topics: {exc}",
                failed=True,
                at=datetime.now(UTC),
            ), None
        return decide(
            self.settings, observation, self.refused_until(observation.served)
        ), observation

    def step(self) -> Decision:
        """One check and its action, logged as one line; never raises for user/broker errors."""
        decision, observation = self.check()
        if observation is not None and decision.action == "retrain":
            decision = self._retrain(decision, observation)
        elif observation is not None and decision.action == "recalibrate":
            decision = self._recalibrate(decision, observation)
        (log.warning if decision.failed else log.info)("%s", decision.line())
        self.decisions.append(decision)
        return decision

    def _retrain(self, decision: Decision, observation: Observation) -> Decision:
        try:
            attempt = self.train(decision.reason, observation.labels)
        except CallscoreError as exc:
            return decision.model_copy(update={"result": f"failed: {exc}", "failed": True})
        if attempt.published is None:
            served = observation.served
            if served is not None:
                until = (
                    attempt.labelled_until
                    or observation.labels.labelled_until
                    or data_until(served)
                )
                self._refused = (served.version, until)
            return decision.model_copy(update={"result": f"not published: {attempt.gate_reason}"})
        self._refused = None
        version = attempt.published.version
        return decision.model_copy(
            update={"result": f"published v{version}", "published_version": version}
        )

    def _recalibrate(self, decision: Decision, observation: Observation) -> Decision:
        served = observation.served
        assert served is not None  # recalibrate is only decided for a served version
        try:
            manifest = self.recalibrate(observation.labels)
        except CallscoreError as exc:
            return decision.model_copy(update={"result": f"failed: {exc}", "failed": True})
        if manifest is None:
            return decision.model_copy(update={"result": "not recalibrated (see the log)"})
        return decision.model_copy(
            update={
                "result": f"published v{manifest.version}",
                "published_version": manifest.version,
            }
        )

    def run(self, max_runs: int | None = None) -> list[Decision]:
        runs = 0
        while max_runs is None or runs < max_runs:
            self.step()
            runs += 1
            if max_runs is None or runs < max_runs:
                self.sleep(self.settings.schedule_check_seconds)
        return list(self.decisions)
