"""`callscore demo`: the whole flow on one machine, as an operator would run it.

Starts a local broker (unless CALLSCORE_BOOTSTRAP_SERVERS is set), creates the topics, trains and
publishes a model with `callscore train`, starts `callscore stream`, publishes prospect events
(two of them invalid) and prints the call tasks and dead letters that come back.
"""

from __future__ import annotations

import json
import os
import secrets
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

from callscore.errors import CallscoreError
from callscore.settings import Settings

console = Console()

# The local broker holds a group join for half the session timeout (docs/local-broker.md).
LOCAL_BROKER_TIMINGS = {
    "CALLSCORE_SESSION_TIMEOUT_SECONDS": "3",
    "CALLSCORE_HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "CALLSCORE_FETCH_MAX_WAIT_MS": "10",
}


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
    from datetime import UTC, datetime

    from schemas import FEATURES, NUMERIC_FEATURES

    sample = frame.sample(count, random_state=3)[list(FEATURES)]
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "event_id": f"demo-{i}",
            "prospect_id": f"cust-{index}",
            "occurred_at": now,
            **{k: int(v) if k in NUMERIC_FEATURES else v for k, v in row.items()},
        }
        for i, (index, row) in enumerate(sample.iterrows())
    ]
    leaky = dict(events[0], event_id="demo-leaky", duration=312)
    wrong_type = dict(events[1], event_id="demo-bad-age", age="forty")
    return [
        (e["prospect_id"].encode(), json.dumps(e).encode()) for e in [*events, leaky, wrong_type]
    ]


def _publish(settings: Settings, messages: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    from callscore.kafka import producer_config

    producer = Producer(producer_config(settings))
    for key, value in messages:
        producer.produce(settings.topic_prospects, key=key, value=value)
    if producer.flush(15):
        raise CallscoreError("the broker did not acknowledge the demo events within 15 s")


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


def _collect(settings: Settings, expected: int, timeout: float = 60.0) -> list[Any]:
    from confluent_kafka import Consumer

    from callscore.kafka import consumer_config

    consumer = Consumer(consumer_config(settings, f"callscore-demo-{secrets.token_hex(4)}"))
    consumer.subscribe([*settings.task_topics.values(), settings.topic_dead_letters])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
    finally:
        consumer.close()
    return messages


def _print_results(settings: Settings, messages: list[Any]) -> None:
    from schemas import CallTask, DeadLetter

    tasks = [
        CallTask.model_validate_json(m.value())
        for m in messages
        if m.topic() != settings.topic_dead_letters
    ]
    letters = [
        DeadLetter.model_validate_json(m.value())
        for m in messages
        if m.topic() == settings.topic_dead_letters
    ]
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
    dead = Table(title="Dead letters")
    for column in ("offset", "kind", "message"):
        dead.add_column(column)
    for letter in letters:
        dead.add_row(str(letter.source_offset), letter.error_kind, letter.message)
    console.print(dead)


def run_demo(out: Path, events: int = 20, search: str = "full") -> int:
    from callscore.local_broker import free_port, start_tansu

    # The demo configures itself through the environment, so its child processes inherit it.
    env = os.environ
    with ExitStack() as stack:
        if "CALLSCORE_BOOTSTRAP_SERVERS" not in env:
            broker = start_tansu()
            stack.callback(broker.stop)
            env["CALLSCORE_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            for name, value in LOCAL_BROKER_TIMINGS.items():
                env.setdefault(name, value)
            console.print(f"local broker (Tansu) on {broker.bootstrap_servers}")
        if "CALLSCORE_MODEL_SIGNING_KEY" not in env:
            env["CALLSCORE_MODEL_SIGNING_KEY"] = secrets.token_hex(32)
            console.print("CALLSCORE_MODEL_SIGNING_KEY not set: using a random key for this demo")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="callscore-")))
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
        _publish(settings, messages)
        _print_results(settings, _collect(settings, expected=len(messages)))
        console.print(f"model card: {out / 'report.html'}")
    return 0
