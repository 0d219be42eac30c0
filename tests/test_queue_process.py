"""The call queue's process lives and dies with its scorer (streamer/queue_process.py)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from core.kafka import ensure_topics
from testkit.harness import publish_model, worker_settings

STARTED = re.compile(r"call queue: process (\d+) started")
WAIT_SECONDS = 30


def queue_pid(log_path: Path) -> int:
    found = STARTED.search(log_path.read_text())
    assert found, "the scorer logs its queue process's pid"
    return int(found.group(1))


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_a_sigkilled_scorer_takes_its_queue_process_along(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    publish_model(settings, version=1)
    worker = workers(settings)
    worker.wait_ready()
    pid = queue_pid(worker.log_path)
    assert alive(pid)

    os.kill(worker.process.pid, signal.SIGKILL)  # the scorer alone (worker.kill: its group)
    worker.process.wait(WAIT_SECONDS)
    assert wait_gone(pid, WAIT_SECONDS), "the queue's process outlived its scorer"


def test_a_dead_queue_process_stops_its_scorer(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    publish_model(settings, version=1)
    worker = workers(settings)
    worker.wait_ready()

    os.kill(queue_pid(worker.log_path), signal.SIGKILL)
    code = worker.process.wait(WAIT_SECONDS)
    assert code != 0, "a scorer without its queue must stop, so its partitions move on"
    assert "the call queue's process exited unasked" in worker.log_path.read_text()
