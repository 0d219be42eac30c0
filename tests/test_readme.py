"""The README stays true: its examples are the committed ones, its configuration table is the
generated one, its code runs against a real broker and scorer, and every relative link resolves.

A README block under test follows a `<!-- readme-test: NAME -->` line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import pytest

from callscore.settings_table import REGENERATE, SECRET, current_block, render_table
from core.kafka import ensure_topics
from core.settings import Settings
from schemas import CallOutcome, DeadLetter, ProspectEvent, task_id_for
from schemas.decode import decode_outcome
from testkit.harness import ApiWorker, collect, produce, publish_model, worker_settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = ROOT / "examples"
API_TOKEN = "readme-test-token"
SNIPPET_TIMEOUT_SECONDS = 60

_BLOCK = re.compile(
    r"<!-- readme-test: (?P<name>[\w-]+) -->\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.S
)
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def readme_block(name: str, document: Path = README) -> str:
    text = document.read_text(encoding="utf-8")
    blocks = {m["name"]: m["code"] for m in _BLOCK.finditer(text)}
    assert name in blocks, f"{document.name} has no fenced block after <!-- readme-test: {name} -->"
    return blocks[name]


def test_prospect_event_block_is_the_committed_example():
    shown = json.loads(readme_block("prospect-event"))
    committed = (EXAMPLES / "prospect-event.json").read_text()
    assert shown == json.loads(committed), "README's prospect event != examples/prospect-event.json"
    ProspectEvent.model_validate_json(committed)


def test_call_outcome_block_is_the_committed_example():
    shown = json.loads(readme_block("call-outcome"))
    committed = (EXAMPLES / "call-outcome.json").read_text()
    assert shown == json.loads(committed), "README's call outcome != examples/call-outcome.json"
    CallOutcome.model_validate_json(committed)


def test_configuration_table_is_the_generated_one():
    block = current_block(README.read_text(encoding="utf-8"))
    assert block is not None, "README.md lost its settings-table markers"
    assert block == render_table(), f"README's configuration table is stale: run `{REGENERATE}`"


def test_every_setting_is_described_and_no_secret_is_shown():
    undescribed = [name for name, f in Settings.model_fields.items() if not f.description]
    assert not undescribed, f"add description= to these core/settings.py fields: {undescribed}"
    table = render_table()
    for variable in ("CALLSCORE_API_TOKEN", "CALLSCORE_SASL_PASSWORD"):
        row = next(line for line in table.splitlines() if f"`{variable}`" in line)
        assert f"| {SECRET} |" in row
    assert str(Path.home()) not in table, "the table must not depend on the machine"


def _anchors(document: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in document.read_text(encoding="utf-8").splitlines():
        if heading := re.match(r"#{1,6} (.*)", line):
            text = re.sub(r"[^\w\- ]", "", heading[1].strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document):
    broken = []
    for match in _LINK.finditer(document.read_text(encoding="utf-8")):
        target = match["target"]
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        path = (document.parent / unquote(path_part)).resolve() if path_part else document
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{document.relative_to(ROOT)}: broken links: {broken}"


def _snippet_env(settings: Settings) -> dict[str, str]:
    """The process environment a user would have: the product's variables, nothing else set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCORE_")}
    return env | settings.as_env()


def test_readme_producer_dialer_and_http_against_a_scorer(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path, api_token=API_TOKEN)
    ensure_topics(settings)
    publish_model(settings, version=1)
    worker = workers(settings)
    api = workers(settings, "api", ApiWorker)
    worker.wait_ready()
    api.wait_ready()
    env = _snippet_env(settings)
    example = json.loads((EXAMPLES / "prospect-event.json").read_text())

    # the producer: the example event reaches the scorer and becomes one call task
    produced = subprocess.run(
        [sys.executable, "-c", readme_block("producer")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT_SECONDS,
    )
    assert produced.returncode == 0, produced.stderr
    tiers = list(settings.task_topics.values())
    tasks = collect(settings, tiers, lambda r: len(r) >= 1, timeout=SNIPPET_TIMEOUT_SECONDS)
    assert [t.json()["event_id"] for t in tasks] == [example["event_id"]]
    task = tasks[0].json()
    assert task["task_id"] == task_id_for(example["event_id"])

    # the dialer: takes that task and reports a valid outcome for it, then stops on Ctrl-C
    dialer = subprocess.Popen(
        [sys.executable, "-c", readme_block("dialer")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        outcomes = collect(
            settings,
            [settings.topic_outcomes],
            lambda r: len(r) >= 1,
            timeout=SNIPPET_TIMEOUT_SECONDS,
        )
        still_consuming = dialer.poll() is None
    finally:
        dialer.send_signal(signal.SIGINT)
        try:
            output, _ = dialer.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            dialer.kill()
            output, _ = dialer.communicate()
    assert len(outcomes) == 1, output
    outcome = decode_outcome(outcomes[0].value or b"")
    assert isinstance(outcome, CallOutcome), outcome
    assert outcome.task_id == task["task_id"]
    assert outcomes[0].key == example["prospect_id"].encode()
    assert still_consuming, output

    # the HTTP block: every curl succeeds and /score gives the stream's answer
    http = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block("http")],
        cwd=ROOT,
        env=env
        | {"SCORER": worker.base_url, "API": api.base_url, "CALLSCORE_API_TOKEN": API_TOKEN},
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT_SECONDS,
    )
    assert http.returncode == 0, http.stderr
    lines = http.stdout.splitlines()
    assert json.loads(lines[0])["ready"] is True
    scored = json.loads(lines[1])
    assert (scored["task_id"], scored["score"]) == (task["task_id"], task["score"])
    assert json.loads(lines[2])["version"] == 1
    assert any(line.startswith("callscore_events_consumed_total 1") for line in lines[3:])


def _dead_letter(n: int, kind: str, received_at: datetime, truncated: bool = False) -> bytes:
    payload = f'{{"event_id": "replay-{n}"}}'.encode()
    return (
        DeadLetter(
            payload=payload,
            payload_size=len(payload) + (100 if truncated else 0),
            payload_truncated=truncated,
            key=f"cust-{n}".encode(),
            source_topic="prospects",
            source_partition=0,
            source_offset=n,
            error_kind=kind,
            message="test",
            received_at=received_at,
        )
        .model_dump_json()
        .encode()
    )


def test_operations_dead_letter_replay_script(kafka_settings):
    settings = kafka_settings
    ensure_topics(settings)
    since = datetime.now(UTC)
    letters = [
        _dead_letter(1, "invalid_fields", since + timedelta(seconds=1)),  # replayed
        _dead_letter(2, "invalid_fields", since + timedelta(seconds=1), truncated=True),  # skipped
        _dead_letter(3, "not_json", since + timedelta(seconds=1)),  # another kind
        _dead_letter(4, "invalid_fields", since - timedelta(days=1)),  # before REPLAY_SINCE
    ]
    produce(settings, [(None, value) for value in letters], topic=settings.topic_dead_letters)

    env = _snippet_env(settings) | {"REPLAY_SINCE": since.isoformat()}
    replay = subprocess.run(
        [sys.executable, "-c", readme_block("replay-dead-letters", OPERATIONS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT_SECONDS,
    )
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1 dead letters, skipped 1 truncated ones" in replay.stdout
    republished = collect(
        settings, [settings.topic_prospects], lambda r: len(r) >= 1, timeout=15, settle=1.0
    )
    assert [(r.key, r.value) for r in republished] == [(b"cust-1", b'{"event_id": "replay-1"}')]
