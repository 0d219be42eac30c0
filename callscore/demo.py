"""`callscore demo`: the whole flow on one machine, as an operator would run it.

Starts a local broker (unless CALLSCORE_BOOTSTRAP_SERVERS is set), creates the topics, trains and
publishes a model with `callscore train`, starts `callscore stream`, publishes prospect events
(two of them invalid) and prints the call tasks and dead letters that come back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from callscore.factories import events_from_frame
from callscore.harness import event_bytes, produce
from core.errors import CallscoreError
from core.local_broker import LOCAL_BROKER_TIMINGS, free_port, start_tansu
from core.settings import Settings, env_vars
from core.topic_reader import Record, read_topics
from registry.keys import generate_keypair

console = Console()


def _run(step: str, argv: list[str]) -> None:
    console.rule(f"[bold]{step}")
    console.print(f"$ {' '.join(argv)}", style="dim")
    if subprocess.run(argv).returncode != 0:
        raise CallscoreError(f"demo step failed: {step}")


def _training_data(workdir: Path, settings: Settings) -> tuple[Path, Any]:
    """The UCI data when available, else a synthetic file with the same schema."""
    from trainer.data import DataError, load_bank, resolve_data_path

    try:
        path = resolve_data_path(None, settings)
        frame, _ = load_bank(path)
        return path, frame
    except DataError as exc:
        from trainer.synthetic import synthetic_bank_frame

        console.print(f"[yellow]{exc}; using synthetic data (model quality means nothing).")
        frame = synthetic_bank_frame(rows=6000)
        path = workdir / "synthetic-bank.csv"
        frame.to_csv(path, sep=";", index=False)
        return path, frame


def _events(frame: Any, count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: `count` valid events drawn from the data plus two invalid ones."""
    events = events_from_frame(frame.sample(count, random_state=3), "demo")
    leaky = dict(events[0], event_id="demo-leaky", duration=312)
    wrong_type = dict(events[1], event_id="demo-bad-age", age="forty")
    return [event_bytes(e) for e in [*events, leaky, wrong_type]]


def _wait_ready(port: int, stream: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stream.poll() is not None:
            raise CallscoreError("the scorer exited during start-up (see its log above)")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise CallscoreError(f"the scorer was not ready within {timeout:.0f} s")


def _collect(settings: Settings, expected: int, timeout: float = 60.0) -> list[Record]:
    topics = [*settings.task_topics.values(), settings.topic_dead_letters]
    return read_topics(settings, topics, done=lambda r: len(r) >= expected, timeout=timeout)


def _print_results(settings: Settings, records: list[Record]) -> None:
    from schemas import CallTask, DeadLetter

    dead = settings.topic_dead_letters
    tasks = [CallTask.model_validate_json(r.value or b"") for r in records if r.topic != dead]
    letters = [DeadLetter.model_validate_json(r.value or b"") for r in records if r.topic == dead]
    table = Table(title="Call tasks, highest score first (dialers drain 'high' first)")
    for column in ("prospect", "score", "priority", "percentile", "model", "task_id"):
        table.add_column(column)
    for task in sorted(tasks, key=lambda t: -t.score):
        table.add_row(
            task.prospect_id,
            f"{task.score:.3f}",
            task.priority,
            f"{task.percentile:.1f}",
            f"v{task.model_version}",
            task.task_id[:8],
        )
    console.print(table)
    dead_table = Table(title="Dead letters")
    for column in ("offset", "kind", "message"):
        dead_table.add_column(column)
    for letter in letters:
        dead_table.add_row(str(letter.source_offset), letter.error_kind, letter.message)
    console.print(dead_table)


def run_demo(out: Path, events: int = 20, search: str = "full") -> int:
    # The demo configures itself through the environment, so its child processes inherit it.
    env = os.environ
    with ExitStack() as stack:
        if "CALLSCORE_BOOTSTRAP_SERVERS" not in env:
            broker = start_tansu()
            stack.callback(broker.stop)
            env["CALLSCORE_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            for name, value in env_vars(LOCAL_BROKER_TIMINGS).items():
                env.setdefault(name, value)
            console.print(f"local broker (Tansu) on {broker.bootstrap_servers}")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="callscore-")))
        if "CALLSCORE_MODEL_SIGNING_KEY_FILE" not in env:
            kid, private, public = generate_keypair(workdir / "keys")
            env["CALLSCORE_MODEL_SIGNING_KEY_FILE"] = str(private)
            env["CALLSCORE_MODEL_TRUSTED_KEYS"] = str(public)
            console.print(f"no model signing key set: using a new key pair ({kid}) for this demo")
        env.setdefault("CALLSCORE_HTTP_PORT", str(free_port()))
        env.setdefault("CALLSCORE_ARTIFACT_DIR", str(workdir / "artifacts"))
        settings = Settings()
        exe = [sys.executable, "-m", "callscore.cli"]
        _run("create topics", [*exe, "topics"])
        data_path, frame = _training_data(workdir, settings)
        _run(
            "train and publish a model",
            [*exe, "train", "--data", str(data_path), "--out", str(out), "--search", search],
        )

        console.rule("[bold]start the scorer")
        stream = subprocess.Popen([*exe, "stream"], cwd=workdir)

        def stop_stream() -> None:
            stream.send_signal(signal.SIGTERM)
            try:
                stream.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stream.kill()

        stack.callback(stop_stream)
        _wait_ready(settings.http_port, stream)

        console.rule(f"[bold]publish {events} prospect events and 2 invalid ones")
        messages = _events(frame, events)
        produce(settings, messages)
        _print_results(settings, _collect(settings, expected=len(messages)))
        console.print(f"model card: {out / 'report.html'}")
    return 0
