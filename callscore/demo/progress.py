"""The run's phases, one tick at a time: train, replay (with a recalibration), drain, settle.

`Conductor.advance(now)` looks at the children and the live state, starts the next command when
its time has come and moves `state.phase` on; it never waits. Each phase has a deadline: a run
stuck in one ends with an error naming it and the logs. While the replay runs, the demo's dialer
agent claims tasks from `callscore api` in a thread of its own (`callscore.demo.agent`); each
tick copies what it got into the state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

from callscore.demo.agent import CLAIM_EVERY_SECONDS, CLAIM_N, DemoAgent
from callscore.demo.phases import Phase
from callscore.demo.setup import Run
from callscore.demo.state import DemoState
from callscore.demo.window import ReplayWindow
from callscore.processes import Child
from core.errors import CallscoreError
from core.settings import Settings

TRAIN_TIMEOUT_SECONDS = 300.0
READY_TIMEOUT_SECONDS = 90.0
DRAIN_TIMEOUT_SECONDS = 60.0
# How long the monitor may take to join the last outcomes before the summary.
MONITOR_SETTLE_SECONDS = 10.0
# Share of the replay's prospects published after which `callscore recalibrate` runs (again if
# the first had too few outcomes): early, so that the new version scores much of the replay.
RECALIBRATE_AT = (0.25, 0.5)
# Reached calls (the labels: a call without a decision says nothing about `y`) it waits for (a
# calibration on fewer is mostly noise).
RECALIBRATE_MIN_OUTCOMES = 100


@dataclass
class Progress:
    """Where the run is, and what it has seen so far (for the summary)."""

    deadline: float  # the current phase must be over by then
    replay_started: float | None = None
    replay_done: float | None = None
    drained: float | None = None
    simulate: Child | None = None
    recalibrations: int = 0
    recalibrate: Child | None = None
    recalibrate_reported: bool = False
    recalibrated: bool = False  # a recalibration was published
    trainer_reported: bool = False
    report: Child | None = None
    quality_mark: int | None = None  # the monitor's quality updates once it joined everything
    published: list[str] = field(default_factory=list)
    reloads: list[str] = field(default_factory=list)


class Conductor:
    """Moves one run through its phases; `advance` is called once per tick of the main loop."""

    def __init__(self, run: Run, state: DemoState, window: ReplayWindow, trainer: Child) -> None:
        self.run = run
        self.state = state
        self.window = window
        self.trainer = trainer
        self.progress = Progress(deadline=time.monotonic() + TRAIN_TIMEOUT_SECONDS)
        self.agent = DemoAgent(run.settings)

    def advance(self, now: float) -> bool:
        """One step; True when the replay is drained and the monitor settled."""
        state = self.state
        state.set_claims(self.agent.stats())
        if now > self.progress.deadline:
            raise CallscoreError(
                f"the demo is stuck in '{state.phase.label}': see the logs in {self.run.logs}"
            )
        self._report_trainer()
        match state.phase:
            case Phase.TRAINING:
                self._training(now)
            case Phase.WAITING_FOR_SCORER:
                if state.serving is not None:
                    self._start_replay(now)
            case Phase.REPLAY:
                self._recalibration()
                self._replaying(now)
            case Phase.DRAINING:
                self._recalibration()
                self._draining(now)
            case Phase.SETTLING:
                return self._settled(now)
            case _:
                raise AssertionError(f"advance() in phase {state.phase}")
        return False

    def note_serving(self, version: int | None) -> None:
        """The scorer's version as its /metrics says (callscore_model_version); a change from one
        version is a hot reload."""
        previous = self.state.serving
        reload = self.state.set_serving(version)
        if reload is not None and previous is not None:
            self.progress.reloads.append(f"v{previous} -> v{version} at {reload.elapsed:.1f} s")

    # --- the phases ------------------------------------------------------------------------------

    def _training(self, now: float) -> None:
        if self.state.serving is not None:
            # v1 is published and loaded; the trainer is only writing its model card now.
            self._start_replay(now)
        elif not self.trainer.running:
            self.state.phase = Phase.WAITING_FOR_SCORER
            self.progress.deadline = now + READY_TIMEOUT_SECONDS

    def _replaying(self, now: float) -> None:
        simulate = self.progress.simulate
        assert simulate is not None
        if simulate.running:
            return
        self.agent.stop(wait=0.0)  # its last request, if any, is counted when it ends
        if simulate.process.returncode != 0:
            raise CallscoreError(f"the replay failed: see {simulate.log_path}")
        self.progress.replay_done = now
        self.progress.deadline = now + DRAIN_TIMEOUT_SECONDS + MONITOR_SETTLE_SECONDS
        self.state.event(f"replay done: {simulate.last_line()}")
        self.state.phase = Phase.DRAINING

    def _draining(self, now: float) -> None:
        state, progress = self.state, self.progress
        done = state.drained()
        recalibrating = progress.recalibrate is not None and progress.recalibrate.running
        assert progress.replay_done is not None
        if (done and not recalibrating) or now > progress.replay_done + DRAIN_TIMEOUT_SECONDS:
            progress.drained = now
            state.phase = Phase.SETTLING
            # Everything is on the topics now: the report reads them while the monitor settles.
            quality = self.run.out / "quality"
            progress.report = self.run.start("report", "report", "--out", str(quality))
            state.event(f"writing the quality report (callscore report) to {quality}")

    def _settled(self, now: float) -> bool:
        state, progress = self.state, self.progress
        assert progress.drained is not None
        if now > progress.drained + MONITOR_SETTLE_SECONDS:
            return True
        # The monitor's gauges lag: wait until it consumed every outcome and prediction, then
        # for one more recomputation of its quality, so the summary's online numbers cover the
        # whole replay.
        if progress.quality_mark is None:
            if state.monitor_caught_up():
                progress.quality_mark = state.quality_updates
            return False
        return state.quality_updates > progress.quality_mark

    # --- the commands it starts ------------------------------------------------------------------

    def _start_replay(self, now: float) -> None:
        options, window = self.run.options, self.window
        replay = window.options  # the plan the window counted, flag by flag
        self.progress.simulate = self.run.start(
            "simulate", "simulate", "--data", str(self.run.settings.data), "--from", window.first,
            "--speedup", f"{window.speedup:.6g}",
            "--outcome-delay", delay_argument(options.outcome_delay),
            "--bad-rate", str(options.bad_rate), "--seed", str(replay.seed),
            "--repeat-rate", str(replay.repeat_rate), "--late-rate", str(replay.late_rate),
            "--do-not-call-rate", str(replay.do_not_call_rate),
            "--lift-rate", str(replay.lift_rate), "--slow-call-rate", str(replay.slow_call_rate),
            "--slow-call-delay", delay_argument(replay.slow_call_delay),
            "--hold-skew", delay_argument(hold_skew(self.run.settings, options.outcome_delay)),
            # With attempts (no --one-call-per-row), as the window counted it: a row is up to
            # CALLSCORE_MAX_ATTEMPTS calls, and the call queue itself sends each retry.
        )  # fmt: skip
        self.progress.replay_started = now
        # The replay itself, the last events' scoring and a slow start of the simulator.
        self.progress.deadline = now + 2 * options.replay_seconds + READY_TIMEOUT_SECONDS
        self.state.phase = Phase.REPLAY
        self.state.event(
            f"replaying {window.records:,} records (prospects, late events, calls and their "
            "retries, do-not-call entries, malformed ones) with callscore simulate"
        )
        self.agent.start()
        self.state.event(
            f"{self.state.claims.agent} claims {CLAIM_N} tasks every {CLAIM_EVERY_SECONDS:g} s "
            "(POST /queue/claim to callscore api); the simulator's calls end the claims"
        )

    def _report_trainer(self) -> None:
        """Once the trainer has exited: what it published, or a one-line error if it failed."""
        progress, trainer = self.progress, self.trainer
        if progress.trainer_reported or trainer.running:
            return
        progress.trainer_reported = True
        if trainer.process.returncode != 0:
            raise CallscoreError(f"training failed: see {trainer.log_path}")
        line = _published_line(trainer)
        progress.published.insert(0, line)
        self.state.event(f"trainer: {line}; model card in {self.run.out / 'model-card'}")

    def _recalibration(self) -> None:
        """A quarter into the replay: `callscore recalibrate` (retried once if it could not)."""
        job = self.progress.recalibrate
        if job is not None and not job.running and not self.progress.recalibrate_reported:
            self._report_recalibration(job)
        if job is not None and (job.running or self.progress.recalibrated):
            return
        if self._recalibration_due():
            self._start_recalibration()

    def _report_recalibration(self, job: Child) -> None:
        self.progress.recalibrate_reported = True
        line = job.last_line().split("; read ")[0]
        if job.process.returncode == 0 and line.startswith("published"):
            self.progress.recalibrated = True
            self.progress.published.append(line)
            self.state.event(f"recalibrate: {line}", "magenta")
        else:
            self.state.event(f"recalibrate: {line or 'failed'} (see {job.log_path})", "yellow")

    def _recalibration_due(self) -> bool:
        state, attempts = self.state, self.progress.recalibrations
        if attempts >= len(RECALIBRATE_AT) or state.phase is not Phase.REPLAY:
            return False
        share = state.produced / max(state.expected or 0, 1)
        labels = state.calls["reached"]
        return share >= RECALIBRATE_AT[attempts] and labels >= RECALIBRATE_MIN_OUTCOMES

    def _start_recalibration(self) -> None:
        progress = self.progress
        progress.recalibrations += 1
        attempt = progress.recalibrations
        name = "recalibrate" if attempt == 1 else f"recalibrate-{attempt}"
        progress.recalibrate = self.run.start(name, "recalibrate")
        progress.recalibrate_reported = False
        self.state.event(
            f"{self.state.calls['reached']:,} calls reached their prospect so far: "
            f"recalibrating v{self.state.serving} on them (callscore recalibrate)"
        )


def hold_skew(settings: Settings, outcome_delay: timedelta) -> timedelta:
    """How far the replay's other prospects go on while a call is held (`callscore simulate
    --hold-skew`): half of what a task lives after its call is due. At the demo's speed a
    retry's call is due milliseconds of wall time after the call before it, far sooner than the
    queue sends and rescores the retry (0.1-0.2 s): held one after the other, the thousand
    held calls of the default replay took minutes; overlapping, they fit in its time. The
    queue's stream time then runs ahead of a held call by less than the task's lifetime (its
    TTL less the outcome delay), so no task expires that would not have."""
    return max(timedelta(days=settings.task_ttl_days) - outcome_delay, timedelta(0)) / 2


def delay_argument(delay: timedelta) -> str:
    """An outcome delay as `callscore simulate --outcome-delay` reads it (in seconds)."""
    seconds = delay.total_seconds()
    return f"{seconds:.0f}s" if seconds.is_integer() else f"{seconds:.6f}s"


def _published_line(trainer: Child) -> str:
    for line in reversed(trainer.log_text().splitlines()):
        if line.startswith("published "):
            return line.strip()
    return "trained (no new version published)"
