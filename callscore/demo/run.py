"""`callscore demo`: the whole system on one machine, live, ending by itself with a reconciliation.

1. A broker: the embedded Tansu unless Kafka is configured (CALLSCORE_BOOTSTRAP_SERVERS or .env);
   on a configured Kafka the demo's topics and consumer group get a per-run suffix.
2. Data: the real UCI file if found or quickly downloadable, else synthetic rows (with a warning).
3. `callscore train --search reference` on the months before the replay window publishes v1,
   while `callscore stream` and `callscore monitor` start.
4. `callscore simulate` replays the window (with malformed events and outcomes) in about
   `replay_seconds`; a quarter of the way in, `callscore recalibrate` publishes v2 on the outcomes
   so far and the scorer hot-reloads it.
5. `callscore report` writes the quality report; every process is stopped; the summary checks
   produced = scored + dead-lettered on the topics themselves.

Every child writes to `<out>/logs/<name>.log` and is listed in `<out>/pids`; the terminal shows
only the view and the summary. Ctrl-C (or SIGTERM, SIGHUP) stops every child before it exits.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from callscore.demo_data import DemoData, replay_start, resolve_demo_data
from callscore.demo_summary import reconcile, render_summary
from callscore.demo_view import DemoState, screen, version_of
from callscore.processes import CALLSCORE, Child, Children, settings_env
from callscore.simulator.replay import ReplayOptions, count_plan, parse_delay, plan_replay
from core.errors import CallscoreError
from core.local_broker import LOCAL_BROKER_TIMINGS, free_port, start_tansu
from core.settings import Settings, load_settings
from core.topic_reader import TopicReader
from registry.keys import generate_keypair

# Folders and files the demo owns inside --out; only these are removed at the start of a run.
OWNED = ("logs", "keys", "faust", "artifacts", "data", "model-card", "quality")
OWNED_FILES = ("pids", "summary.json")
TRAIN_TIMEOUT_SECONDS = 300.0
READY_TIMEOUT_SECONDS = 90.0
DRAIN_TIMEOUT_SECONDS = 60.0
REPORT_TIMEOUT_SECONDS = 120.0
# How long the monitor may take to join the last outcomes before the summary.
MONITOR_SETTLE_SECONDS = 10.0
# Share of the replay's prospects published after which `callscore recalibrate` runs (again if
# the first had too few outcomes): early, so that the new version scores much of the replay.
RECALIBRATE_AT = (0.25, 0.5)
# Outcomes of the served version it waits for (a calibration on fewer is mostly noise).
RECALIBRATE_MIN_OUTCOMES = 100
HTTP_POLL_SECONDS = 1.0
HTTP_TIMEOUT_SECONDS = 0.5
TICK_SECONDS = 0.2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class DemoOptions:
    out: Path = Path("out/demo")
    data: Path | None = None
    synthetic: bool = False
    download_timeout: float = 10.0  # 0: never download
    prospects: int = 5000  # about this many prospect rows are replayed
    start: str | None = None  # first replayed month; default: from `prospects`
    replay_seconds: float = 30.0
    bad_rate: float = 0.02
    outcome_delay: str = "2d"
    search: str = "reference"


@dataclass
class Run:
    """What one run set up: settings, children, where things are."""

    options: DemoOptions
    out: Path
    settings: Settings
    children: Children
    broker: Child | None
    broker_label: str

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def env(self) -> dict[str, str]:
        """A child's environment: the demo's settings only (no other CALLSCORE_* variable)."""
        return settings_env(self.settings)

    def start(self, name: str, *args: str) -> Child:
        return self.children.start(name, [CALLSCORE, *args], self.env, cwd=self.out)


def run_demo(options: DemoOptions, console: Console | None = None) -> int:
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    started = time.monotonic()
    out = options.out.resolve()
    _clean(out)
    children = Children(out / "logs", out / "pids")
    _log_to_file(out / "logs" / "demo.log")
    with _stop_signals_as_interrupt():
        try:
            run = _setup(options, out, children, console)
            code = _main(run, console, started)
        except KeyboardInterrupt:
            with suppress(OSError):  # the terminal may be gone (SIGHUP)
                console.print("[yellow]interrupted: stopping every process the demo started...")
            raise
        finally:
            with _ignored(STOP_SIGNALS):  # a second Ctrl-C must not cut the cleanup short
                broker = [c for c in children.all if c.name == "broker"]
                children.stop_all(last=broker)
    return code


# --- setup ---------------------------------------------------------------------------------------


def _clean(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:
        shutil.rmtree(out / name, ignore_errors=True)
    for name in OWNED_FILES:
        (out / name).unlink(missing_ok=True)


def _log_to_file(path: Path) -> None:
    """In-process library logs (Kafka clients, warnings) go to the demo's log, not the screen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)


@contextmanager
def _stop_signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (the terminal closed) clean up like Ctrl-C: the children run in
    sessions of their own, so nothing else would stop them."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _ignored(signals: tuple[signal.Signals, ...]) -> Iterator[None]:
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _setup(options: DemoOptions, out: Path, children: Children, console: Console) -> Run:
    base = load_settings()
    run_id = uuid.uuid4().hex[:8]
    updates: dict[str, Any] = {}
    if "bootstrap_servers" in base.model_fields_set:
        # Someone's Kafka: topics and group of this run only, never the real ones.
        broker_label = f"Kafka at {base.bootstrap_servers} (topics demo-{run_id}.*)"
        prefix = f"demo-{run_id}"
        updates |= {
            "topic_prospects": f"{prefix}.prospects",
            "topic_tasks_prefix": f"{prefix}.call-tasks",
            "topic_dead_letters": f"{prefix}.prospects.dead-letters",
            "topic_models": f"{prefix}.models",
            "topic_outcomes": f"{prefix}.call-outcomes",
            "topic_outcome_dead_letters": f"{prefix}.call-outcomes.dead-letters",
            "topic_predictions": f"{prefix}.predictions",
        }
        broker = None
    else:
        log_path = out / "logs" / "broker.log"
        local = start_tansu(log_path=str(log_path))
        assert local.process is not None
        broker = children.adopt("broker", local.process, log_path)
        broker_label = f"embedded Tansu at {local.bootstrap_servers}"
        updates |= {"bootstrap_servers": local.bootstrap_servers, **LOCAL_BROKER_TIMINGS}
    _kid, private, public = generate_keypair(out / "keys")
    updates |= {
        "streamer_app_id": f"callscore-demo-{run_id}",
        "streamer_data_dir": out / "faust",
        "artifact_dir": out / "artifacts",
        "model_signing_key_file": private,
        "model_trusted_keys": str(public),
        "pinned_model_version": None,
        "api_token": None,
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "monitor_http_port": free_port(),
    }
    return Run(options, out, base.model_copy(update=updates), children, broker, broker_label)


def _data(run: Run, console: Console) -> DemoData:
    options = run.options
    return resolve_demo_data(
        run.settings,
        run.out / "data",
        options.data,
        options.synthetic,
        options.download_timeout,
        say=lambda message: console.print(message, style="yellow", highlight=False),
    )


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where the run is; the main loop advances it one tick at a time."""

    deadline: float  # the current phase must be over by then
    replay_started: float | None = None
    replay_done: float | None = None
    drained: float | None = None
    recalibrations: int = 0
    recalibrate: Child | None = None
    recalibrate_reported: bool = False
    recalibrated: bool = False  # a recalibration was published
    trainer_reported: bool = False
    report: Child | None = None
    quality_mark: int | None = None  # the monitor's quality updates once it joined everything
    published: list[str] = field(default_factory=list)
    reloads: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Replay:
    options: ReplayOptions
    records: int  # everything the plan publishes
    prospects: int  # prospect records (valid and malformed): what must be scored or dead-lettered
    valid: int
    first: str
    last: str
    speedup: float


def _plan(run: Run, data: DemoData) -> Replay:
    options = run.options
    start = options.start or replay_start(data.frame, options.prospects)
    replay = ReplayOptions(
        start=start, outcome_delay=parse_delay(options.outcome_delay), bad_rate=options.bad_rate
    )
    plan = plan_replay(data.frame, replay)
    counts = count_plan(plan).values()
    span = (plan[-1].at - plan[0].at).total_seconds()
    return Replay(
        options=replay,
        records=len(plan),
        prospects=sum(c.events + c.bad_events for c in counts),
        valid=sum(c.events for c in counts),
        first=start,
        last=plan[-1].period,
        speedup=max(span / options.replay_seconds, 1.0),
    )


def _main(run: Run, console: Console, started: float) -> int:
    options = run.options
    data = _data(run, console)
    replay = _plan(run, data)
    # The trainer's base data stops where the replay starts: no row is used twice.
    settings = run.settings.model_copy(update={"base_data_until": replay.first, "data": data.path})
    run.settings = settings
    day = timedelta(days=1).total_seconds() / replay.speedup
    header = (
        f"{run.broker_label} · data {data.source} · replay {replay.first}.."
        f"{replay.last}: {replay.valid:,} prospects + {replay.prospects - replay.valid:,} "
        f"malformed, x{replay.speedup:,.0f} (a day of calls in {day:.2f} s)"
    )
    state = DemoState(settings, started)
    state.expected = replay.prospects
    if data.warning:
        state.event(data.warning, "bold yellow")

    model_card = run.out / "model-card"
    trainer = run.start(
        "train", "train", "--data", str(data.path), "--out", str(model_card),
        "--search", options.search, "--no-outcomes",
    )  # fmt: skip
    state.phase = "training"
    state.event(
        f"training v1 on the months before {replay.first} (callscore train --search "
        f"{options.search}); scorer and monitor starting"
    )
    stream = run.start("stream", "stream", "-l", "info")
    monitor = run.start("monitor", "monitor")
    progress = Progress(deadline=time.monotonic() + TRAIN_TIMEOUT_SECONDS)
    topics = [
        settings.topic_prospects,
        *settings.task_topics.values(),
        settings.topic_dead_letters,
        settings.topic_outcomes,
    ]
    kafka_log = logging.getLogger("callscore.demo.kafka")
    with (
        TopicReader(settings, topics, group_prefix="callscore-demo", logger=kafka_log) as reader,
        screen(console, state, header, data.warning) as refresh,
    ):
        next_http = 0.0
        while True:
            state.add_records(reader.poll(TICK_SECONDS))
            now = time.monotonic()
            if now >= next_http:
                next_http = now + HTTP_POLL_SECONDS
                _poll_http(run, state, stream, monitor, progress)
            _require_running(run, (stream, monitor))
            if _advance(run, state, progress, trainer, replay, now):
                break
            refresh()
        state.phase = "finishing: quality report, stopping the scorer and the monitor"
        refresh()
        run.children.stop([stream, monitor])
        assert progress.report is not None
        report = progress.report
        _wait(report, REPORT_TIMEOUT_SECONDS)
        state.phase = "done"
        refresh()
    reconciliation = reconcile(settings, kafka_log)
    report_page = run.out / "quality" / "report.html"
    card_page = model_card / "report.html"
    elapsed = time.monotonic() - started
    summary = {
        "elapsed_seconds": round(elapsed, 1),
        "phase_seconds": _phase_seconds(progress, started, elapsed),
        "broker": run.broker_label,
        "data": data.source,
        "synthetic": data.synthetic,
        "replay": {"from": replay.first, "to": replay.last, "speedup": replay.speedup},
        "reconciliation": reconciliation.as_dict(),
        "model_versions_scoring": {str(v): n for v, n in sorted(state.by_version.items())},
        "published": progress.published,
        "hot_reloads": progress.reloads,
        "online_quality": {
            str(v): {"outcomes": q.outcomes, "roc_auc": q.roc_auc, "conversion": q.conversion}
            for v, q in state.quality.items()
        },
        "model_card": str(card_page) if card_page.is_file() else None,
        "quality_report": str(report_page) if report_page.is_file() else None,
        "logs": str(run.logs),
    }
    (run.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(render_summary(summary, reconciliation, data.warning))
    return 0 if reconciliation.reconciles else 1


def _phase_seconds(progress: Progress, started: float, elapsed: float) -> dict[str, float]:
    """Wall time of start-up and training, the replay (to its last event handled), the end."""
    assert progress.replay_started is not None and progress.drained is not None
    return {
        "start_and_training": round(progress.replay_started - started, 1),
        "replay": round(progress.drained - progress.replay_started, 1),
        "finishing": round(started + elapsed - progress.drained, 1),
    }


def _advance(
    run: Run, state: DemoState, progress: Progress, trainer: Child, replay: Replay, now: float
) -> bool:
    """One step of the run's phases; True when the replay is drained and the monitor settled."""
    if now > progress.deadline:
        raise CallscoreError(f"the demo is stuck in '{state.phase}': see the logs in {run.logs}")
    _report_trainer(run, state, progress, trainer)
    if state.phase == "training":
        if state.serving is not None:
            # v1 is published and loaded; the trainer is only writing its model card now.
            _start_replay(run, state, progress, replay, now)
        elif not trainer.running:
            state.phase = "waiting for the scorer"
            progress.deadline = now + READY_TIMEOUT_SECONDS
        return False
    if state.phase == "waiting for the scorer":
        if state.serving is not None:
            _start_replay(run, state, progress, replay, now)
        return False
    if state.phase == "replay":
        _recalibration(run, state, progress)
        simulate = next(c for c in run.children.all if c.name == "simulate")
        if simulate.running:
            return False
        if simulate.process.returncode != 0:
            raise CallscoreError(f"the replay failed: see {simulate.log_path}")
        progress.replay_done = now
        progress.deadline = now + DRAIN_TIMEOUT_SECONDS + MONITOR_SETTLE_SECONDS
        state.event(f"replay done: {simulate.last_line()}")
        state.phase = "draining"
        return False
    if state.phase == "draining":
        _recalibration(run, state, progress)
        done = state.expected is not None and state.handled >= state.expected
        recalibrating = progress.recalibrate is not None and progress.recalibrate.running
        assert progress.replay_done is not None
        if (done and not recalibrating) or now > progress.replay_done + DRAIN_TIMEOUT_SECONDS:
            progress.drained = now
            state.phase = "settling: the monitor joins the last outcomes"
            # Everything is on the topics now: the report reads them while the monitor settles.
            progress.report = run.start("report", "report", "--out", str(run.out / "quality"))
            state.event(f"writing the quality report (callscore report) to {run.out / 'quality'}")
        return False
    assert progress.drained is not None
    if now > progress.drained + MONITOR_SETTLE_SECONDS:
        return True
    # The monitor's gauges lag: wait until it joined every outcome, then for one more
    # recomputation of its quality, so the summary's online numbers cover the whole replay.
    if progress.quality_mark is None:
        if state.matched >= state.outcomes:
            progress.quality_mark = state.quality_updates
        return False
    return state.quality_updates > progress.quality_mark


def _report_trainer(run: Run, state: DemoState, progress: Progress, trainer: Child) -> None:
    """Once the trainer has exited: what it published, or a one-line error if it failed."""
    if progress.trainer_reported or trainer.running:
        return
    progress.trainer_reported = True
    if trainer.process.returncode != 0:
        raise CallscoreError(f"training failed: see {trainer.log_path}")
    line = _published_line(trainer)
    progress.published.insert(0, line)
    state.event(f"trainer: {line}; model card in {run.out / 'model-card'}")


def _start_replay(
    run: Run, state: DemoState, progress: Progress, replay: Replay, now: float
) -> None:
    options = run.options
    run.start(
        "simulate", "simulate", "--data", str(run.settings.data), "--from", replay.first,
        "--speedup", f"{replay.speedup:.6g}", "--outcome-delay", options.outcome_delay,
        "--bad-rate", str(options.bad_rate), "--seed", str(replay.options.seed),
    )  # fmt: skip
    progress.replay_started = now
    # The replay itself, the last events' scoring and a slow start of the simulator.
    progress.deadline = now + 2 * options.replay_seconds + READY_TIMEOUT_SECONDS
    state.phase = "replay"
    state.event(
        f"replaying {replay.records:,} records (prospects, their outcomes, malformed ones) "
        "with callscore simulate"
    )


def _recalibration(run: Run, state: DemoState, progress: Progress) -> None:
    """A quarter into the replay: `callscore recalibrate` (retried once if it could not)."""
    job = progress.recalibrate
    if job is not None and not job.running and not progress.recalibrate_reported:
        progress.recalibrate_reported = True
        line = job.last_line().split("; read ")[0]
        if job.process.returncode == 0 and line.startswith("published"):
            progress.recalibrated = True
            progress.published.append(line)
            state.event(f"recalibrate: {line}", "magenta")
        else:
            state.event(f"recalibrate: {line or 'failed'} (see {job.log_path})", "yellow")
    if job is not None and (job.running or progress.recalibrated):
        return
    if progress.recalibrations >= len(RECALIBRATE_AT) or state.phase != "replay":
        return
    share = state.produced / max(state.expected or 0, 1)
    if share < RECALIBRATE_AT[progress.recalibrations] or state.outcomes < RECALIBRATE_MIN_OUTCOMES:
        return
    progress.recalibrations += 1
    attempt = progress.recalibrations
    name = "recalibrate" if attempt == 1 else f"recalibrate-{attempt}"
    progress.recalibrate = run.start(name, "recalibrate")
    progress.recalibrate_reported = False
    state.event(
        f"{state.outcomes:,} outcomes so far: recalibrating v{state.serving} on them "
        "(callscore recalibrate)"
    )


def _published_line(trainer: Child) -> str:
    for line in reversed(trainer.log_text().splitlines()):
        if line.startswith("published "):
            return line.strip()
    return "trained (no new version published)"


def _poll_http(
    run: Run, state: DemoState, stream: Child, monitor: Child, progress: Progress
) -> None:
    settings = run.settings
    if stream.running:
        document = _get_json(f"http://127.0.0.1:{settings.http_port}/model")
        version = version_of(document)
        previous = state.serving
        reload = state.set_serving(version)
        if reload is not None and previous is not None:
            progress.reloads.append(f"v{previous} -> v{version} at {reload.elapsed:.1f} s")
    if monitor.running:
        text = _get_text(f"http://127.0.0.1:{settings.monitor_http_port}/metrics")
        if text:
            state.set_monitor_metrics(text)


def _get_text(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as reply:
            return str(reply.read().decode())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _get_json(url: str) -> Any:
    text = _get_text(url)
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None


def _require_running(run: Run, children: tuple[Child, ...]) -> None:
    for child in children:
        if not child.running:
            raise CallscoreError(
                f"`callscore {child.name}` exited ({child.process.returncode}): "
                f"see {child.log_path}"
            )
    if run.broker is not None and not run.broker.running:
        raise CallscoreError(f"the embedded broker exited: see {run.broker.log_path}")


def _wait(child: Child, timeout: float) -> None:
    """Wait for a one-shot command; one still running after `timeout` is stopped with the rest
    (its output is then reported missing)."""
    with suppress(subprocess.TimeoutExpired):
        child.process.wait(timeout)


__all__ = ["DemoOptions", "run_demo"]
