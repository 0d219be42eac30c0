"""`run_demo`: one demo run from an empty output folder to its summary (see the package's doc)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from rich.console import Console

from callqueue.rules import QueuePolicy
from callscore.demo.data import DemoData, resolve_demo_data
from callscore.demo.options import DemoOptions
from callscore.demo.phases import Phase
from callscore.demo.probes import monitor_metrics, scorer_metrics, served_version
from callscore.demo.progress import Conductor, Progress
from callscore.demo.reconcile import Reconciliation, reconcile
from callscore.demo.setup import Run, clean, log_to_file, set_up
from callscore.demo.signals import ignored, stop_signals_as_interrupt
from callscore.demo.state import DemoState
from callscore.demo.summary import render_summary, summary_of
from callscore.demo.view import screen
from callscore.demo.window import ReplayWindow, plan_window
from callscore.processes import Child, Children
from core.errors import CallscoreError
from core.topic_reader import TopicReader

REPORT_TIMEOUT_SECONDS = 120.0
HTTP_POLL_SECONDS = 1.0
TICK_SECONDS = 0.2
KAFKA_LOG = logging.getLogger("callscore.demo.kafka")


@dataclass(frozen=True)
class Workers:
    """The long-running children (and the trainer that starts with them)."""

    trainer: Child
    stream: Child
    monitor: Child
    api: Child

    @property
    def services(self) -> tuple[Child, ...]:
        """Those that must run until the end."""
        return (self.stream, self.monitor, self.api)


def run_demo(options: DemoOptions, console: Console | None = None) -> int:
    """Run the demo; 0 when the topics reconcile, 1 when not. Every child is stopped at the end,
    also on Ctrl-C, SIGTERM or SIGHUP (then KeyboardInterrupt is raised again)."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    started = time.monotonic()
    out = options.out.resolve()
    clean(out)
    children = Children(out / "logs", out / "pids")
    log_to_file(out / "logs" / "demo.log")
    with stop_signals_as_interrupt():
        try:
            return _main(set_up(options, out, children), console, started)
        except KeyboardInterrupt:
            with suppress(OSError):  # the terminal may be gone (SIGHUP)
                console.print("[yellow]interrupted: stopping every process the demo started...")
            raise
        finally:
            with ignored():  # a second Ctrl-C must not cut the cleanup short
                broker = [c for c in children.all if c.name.split("-")[0] == "broker"]
                children.stop_all(last=broker)


def _main(run: Run, console: Console, started: float) -> int:
    data = _data(run, console)
    window = plan_window(data.frame, run.options, QueuePolicy.of(run.settings))
    # The trainer's base data stops where the replay starts: no row is used twice.
    run.settings = run.settings.model_copy(
        update={"base_data_until": window.first, "data": data.path}
    )
    state = DemoState(run.settings, started)
    state.expected = window.prospects
    state.expected_outcomes = window.outcomes
    if data.warning:
        state.event(data.warning, "bold yellow")
    warning = _warning(run, data)
    workers = _start(run, state, data, window)
    conductor = Conductor(run, state, window, workers.trainer)
    try:
        with screen(console, state, _header(run, data, window), warning) as refresh:
            _watch(run, conductor, workers, refresh)
            _poll_http(run, conductor, workers)  # the scorer's last counts, before it stops
            conductor.agent.stop()
            state.set_claims(conductor.agent.stats())
            state.phase = Phase.FINISHING
            refresh()
            run.children.stop(list(workers.services))
            # The topics are final: counted while `callscore report` still reads them.
            reconciliation = reconcile(run.settings, KAFKA_LOG)
            assert conductor.progress.report is not None
            _wait(conductor.progress.report, REPORT_TIMEOUT_SECONDS)
            state.phase = Phase.DONE
            refresh()
    finally:
        conductor.agent.stop(wait=0.0)
    return _finish(run, console, data, window, state, conductor.progress, reconciliation, started)


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


def _warning(run: Run, data: DemoData) -> str | None:
    """What stays on the screen and under the summary: the broker's and the data's fallbacks,
    one line each."""
    return "\n".join(line for line in (run.broker_warning, data.warning) if line) or None


def _header(run: Run, data: DemoData, window: ReplayWindow) -> str:
    day = 86_400 / window.speedup
    return (
        f"{run.broker_label} · data {data.source} · replay {window.first}.."
        f"{window.last}: {window.valid:,} prospect events + {window.prospects - window.valid:,} "
        f"malformed, x{window.speedup:,.0f} (a day of calls in {day:.2f} s)"
    )


def _start(run: Run, state: DemoState, data: DemoData, window: ReplayWindow) -> Workers:
    """The trainer (v1 on the months before the replay), the scorer, the monitor and the API
    (`callscore api`: the dialer-facing HTTP, where the demo's agent claims its calls)."""
    search = run.options.search
    trainer = run.start(
        "train", "train", "--data", str(data.path), "--out", str(run.out / "model-card"),
        "--search", search, "--no-outcomes",
    )  # fmt: skip
    state.phase = Phase.TRAINING
    state.event(
        f"training v1 on the months before {window.first} (callscore train --search "
        f"{search}); scorer, monitor and API starting"
    )
    stream = run.start("stream", "stream", "-l", "info")
    monitor = run.start("monitor", "monitor")
    api = run.start("api", "api", "-l", "info")
    return Workers(trainer, stream, monitor, api)


def _watch(run: Run, conductor: Conductor, workers: Workers, refresh: Callable[[], None]) -> None:
    """Tick until the run is over: read the topics, poll the endpoints, advance the phases."""
    settings, state = run.settings, conductor.state
    topics = [
        settings.topic_prospects,
        settings.topic_predictions,
        settings.topic_dead_letters,
        settings.topic_outcomes,
        settings.topic_queue,
    ]
    with TopicReader(settings, topics, group_prefix="callscore-demo", logger=KAFKA_LOG) as reader:
        next_http = 0.0
        while True:
            state.add_records(reader.poll(TICK_SECONDS))
            now = time.monotonic()
            if now >= next_http:
                next_http = now + HTTP_POLL_SECONDS
                _poll_http(run, conductor, workers)
            _require_running(run, workers.services)
            if conductor.advance(now):
                return
            refresh()


def _poll_http(run: Run, conductor: Conductor, workers: Workers) -> None:
    """The scorer's and the monitor's /metrics (each waits HTTP_TIMEOUT_SECONDS at most); the
    served version is the scorer's gauge (no answer: the last one stands)."""
    if workers.stream.running:
        text = scorer_metrics(run.settings)
        if text:
            conductor.note_serving(served_version(text))
            conductor.state.set_scorer_metrics(text)
    if workers.monitor.running:
        text = monitor_metrics(run.settings)
        if text:
            conductor.state.set_monitor_metrics(text)


def _require_running(run: Run, children: tuple[Child, ...]) -> None:
    for child in children:
        if not child.running:
            raise CallscoreError(
                f"`callscore {child.name}` exited ({child.process.returncode}): "
                f"see {child.log_path}"
            )
    for broker in run.brokers:
        if not broker.running:
            raise CallscoreError(
                f"the broker the demo started ({run.broker_label}) exited: see {broker.log_path}"
            )


def _wait(child: Child, timeout: float) -> None:
    """Wait for a one-shot command; one still running after `timeout` is stopped with the rest
    (its output is then reported missing)."""
    with suppress(subprocess.TimeoutExpired):
        child.process.wait(timeout)


def _finish(
    run: Run,
    console: Console,
    data: DemoData,
    window: ReplayWindow,
    state: DemoState,
    progress: Progress,
    reconciliation: Reconciliation,
    started: float,
) -> int:
    """Write summary.json, print the summary; 0 when the topics reconcile."""
    summary = summary_of(run, data, window, state, progress, reconciliation, started)
    (run.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(render_summary(summary, reconciliation, _warning(run, data)))
    return 0 if reconciliation.reconciles else 1
