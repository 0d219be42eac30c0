"""The JSON contracts from another language and another Kafka client: clients/node/roundtrip.js.

A Node.js program (kafkajs, pure JavaScript) publishes the README's prospect event, consumes its
call task from the tier topics as a dialer would and publishes the README's call outcome for it.
A real scorer does the scoring in between; the test checks what both sides put on the topics.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from core.kafka import ensure_topics
from core.topic_reader import read_topics
from schemas import CallTask, task_id_for
from schemas.decode import decode_outcome
from testkit.harness import publish_model, worker_settings

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients" / "node"
EXAMPLES = ROOT / "examples"
ROUNDTRIP_TIMEOUT_SECONDS = 90


def _node_or_skip() -> str:
    node = shutil.which("node")
    missing = (
        "node is not installed"
        if node is None
        else "clients/node/node_modules is missing (run `npm ci` in clients/node)"
        if not (CLIENT / "node_modules" / "kafkajs").is_dir()
        else None
    )
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}; .ci/run installs it")
        pytest.skip(missing)
    assert node is not None
    return node


def _line_after(stdout: str, prefix: str) -> str:
    for line in stdout.splitlines():
        if line.startswith(prefix):
            return line.split(": ", 1)[1]
    raise AssertionError(f"no line starting {prefix!r} in the client's output:\n{stdout}")


def test_node_client_produces_event_takes_task_and_publishes_outcome(
    kafka_settings, tmp_path, workers
):
    node = _node_or_skip()
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    publish_model(settings, version=1)
    worker = workers(settings)
    worker.wait_ready()

    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCORE_")}
    env.update(settings.as_env())
    done = subprocess.run(
        [node, "roundtrip.js", "--timeout", str(ROUNDTRIP_TIMEOUT_SECONDS - 30)],
        cwd=CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=ROUNDTRIP_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\n{worker.log()}"

    # the task the dialer printed is a CallTask for the README's event (fresh event_id suffix)
    readme_event = json.loads((EXAMPLES / "prospect-event.json").read_text())
    task = CallTask.model_validate_json(_line_after(done.stdout, "call task from "))
    assert task.event_id.startswith(readme_event["event_id"] + "-")
    assert task.prospect_id == readme_event["prospect_id"]
    assert task.task_id == task_id_for(task.event_id)
    assert task.model_version == 1

    # the event on the prospects topic is the README's, keyed by prospect_id
    events = read_topics(settings, [settings.topic_prospects])
    assert [r.key for r in events] == [readme_event["prospect_id"].encode()]
    assert events[0].json() == {**readme_event, "event_id": task.event_id}

    # the outcome on the outcomes topic is the README's, for that task, and a valid CallOutcome
    outcomes = read_topics(settings, [settings.topic_outcomes])
    assert len(outcomes) == 1
    outcome = decode_outcome(outcomes[0].value)
    readme_outcome = json.loads((EXAMPLES / "call-outcome.json").read_text())
    assert outcome.task_id == task.task_id
    assert outcomes[0].key == readme_event["prospect_id"].encode()
    assert outcomes[0].json() == {**readme_outcome, "task_id": task.task_id}
