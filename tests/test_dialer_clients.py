"""The reference dialers of clients/ (clients/python/dialer.py, clients/node/dialer.js) against a
real broker, a scorer and `callscore api`: they claim, "call" (simulated, seeded), publish
outcomes; the test checks from the topics that every outcome keeps the product's contract, that
no task is called twice, that each dialer's printed summary is what it published, and that the
queue reacted (tasks closed, retried or suppressed; do-not-call entries)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from callqueue.rules import retry_event_id
from core.kafka import ensure_topics
from core.local_broker import free_port
from core.settings import Settings
from core.topic_reader import Record, read_topics
from schemas import RECYCLED, DoNotCallEntry, PredictionRecord, task_id_for
from schemas.decode import decode_outcome
from testkit.factories import valid_event
from testkit.harness import (
    StreamWorker,
    event_bytes,
    produce,
    worker_settings,
)

ROOT = Path(__file__).resolve().parents[1]
PYTHON_DIALER = ROOT / "clients" / "python" / "dialer.py"
NODE_CLIENT = ROOT / "clients" / "node"

PROSPECTS = 12
CALLS = 6  # per dialer: the Python one calls the six best tasks, the Node one the six others
BATCH = 4  # so each run claims twice (4, then 2)
SHARES = "reached=3,no_answer=2,callback=1,wrong_number=1,do_not_call=1"
# Each dialer's seed and options: its six draws include the dispositions the test needs
# (asserted below), five of the seven in all. The draws are the same in both languages.
RUNS: dict[str, tuple[int, tuple[str, ...]]] = {
    "python": (11, ()),
    "node": (17, ("--answer-rate", "0.5")),  # reached 0.5; the others keep their proportions
}
NEEDED = {"reached", "no_answer", "do_not_call"}
# How the queue withdraws the task a disposition names (docs/architecture.md, "The call queue").
WITHDRAWN = {"reached": "closed", "wrong_number": "closed", "do_not_call": "suppressed"}
TOKEN = "dialer-token"
WAIT_SECONDS = 45
RUN_SECONDS = 60
CALL_LINE = re.compile(r"^call (\d+) (.+)$")


def _reference() -> ModuleType:
    """clients/python/dialer.py as a module: its pure functions say what a seed draws."""
    spec = importlib.util.spec_from_file_location("reference_dialer", PYTHON_DIALER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _node_problem() -> str | None:
    """Why the Node client cannot run here (None: it can). Under CI=true that is a failure."""
    problem = (
        "node is not installed"
        if shutil.which("node") is None
        else "clients/node/node_modules is missing (run `npm ci` in clients/node)"
        if not (NODE_CLIENT / "node_modules" / "kafkajs").is_dir()
        else None
    )
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"{problem}; .ci/run installs it")
    return problem


def _command(client: str, *args: str) -> tuple[list[str], Path]:
    if client == "python":
        return [sys.executable, str(PYTHON_DIALER), *args], ROOT
    node = shutil.which("node")
    assert node is not None
    return [node, "dialer.js", *args], NODE_CLIENT


def _run(
    client: str, settings: Settings, *args: str, **env_updates: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCORE_")}
    env.update(settings.as_env())  # the product's variables, as an operator sets them
    env.update(env_updates)
    command, cwd = _command(client, *args)
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_SECONDS
    )


def _one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 1 and exactly one stderr line, `dialer: error: ...`, naming `words`."""
    assert done.returncode == 1, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dialer: error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _parse(stdout: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The per-call lines (their key=value fields, and `call`) and the final JSON summary."""
    lines = stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    calls = []
    for line in lines[:-1]:
        match = CALL_LINE.match(line)
        assert match, f"not a call line: {line!r}"
        fields = dict(part.split("=", 1) for part in match.group(2).split())
        calls.append({"call": match.group(1), **fields})
    return calls, summary


def _newest(records: list[Record]) -> dict[str, Record]:
    newest: dict[str, Record] = {}
    for record in records:
        assert record.key is not None
        newest[record.key.decode()] = record
    return newest


def _queue(api: StreamWorker) -> dict[str, Any]:
    answer = api.http("GET", f"/queue?limit={PROSPECTS}", token=TOKEN)
    assert answer.status == 200, answer.text
    document: dict[str, Any] = answer.body
    return document


def _check_run(
    client: str,
    done: subprocess.CompletedProcess[str],
    settings: Settings,
    expected: list[dict[str, Any]],
    window: tuple[datetime, datetime],
    seen: set[tuple[int, int]],
) -> list[dict[str, Any]]:
    """One dialer run: its output, and the outcomes it put on the topic (returned)."""
    reference = _reference()
    agent, (seed, options) = f"{client}-dialer", RUNS[client]
    shares = reference.parse_shares(SHARES)
    if options:
        shares = reference.with_answer_rate(shares, float(options[1]))
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.stderr == ""  # quiet: the clients' own logs do not reach the terminal
    calls, summary = _parse(done.stdout)

    # the calls: the best tasks, best first, with the seed's dispositions
    by_task = {t["task_id"]: t for t in expected}
    assert [c["task"] for c in calls] == [t["task_id"] for t in expected]
    assert [int(c["call"]) for c in calls] == list(range(1, CALLS + 1))
    drawn = [
        reference.pick(shares, reference.uniform(seed, n, "disposition"))
        for n in range(1, CALLS + 1)
    ]
    assert [c["disposition"] for c in calls] == drawn
    assert set(drawn) >= NEEDED, f"seed {seed} no longer draws {NEEDED}: pick another"

    # the outcomes on the topic: one per call, valid by the contract, what the seed says
    records = read_topics(settings, [settings.topic_outcomes])
    fresh = [r for r in records if (r.partition, r.offset) not in seen]
    outcomes = []
    for record in fresh:
        outcome = decode_outcome(record.value)  # the product's own contract, validators and all
        document = record.json()
        assert record.key == outcome.prospect_id.encode()
        task = by_task[document["task_id"]]
        assert outcome.event_id == task["event_id"]
        assert outcome.task_id == task_id_for(task["event_id"])
        assert window[0] <= outcome.called_at <= window[1]
        call = next(int(c["call"]) for c in calls if c["task"] == task["task_id"])
        reference_outcome = reference.outcome_for(task, call, seed, shares, outcome.called_at, 1.0)
        assert {k: v for k, v in document.items() if k != "notes"} == {
            k: v for k, v in reference_outcome.items() if k != "notes"
        }
        assert client in document["notes"]
        outcomes.append(document)
    assert sorted(o["task_id"] for o in outcomes) == sorted(by_task)  # each task once

    # the summary is what went onto the topic
    dispositions = Counter(o["disposition"] for o in outcomes)
    assert summary == {
        "agent": agent,
        "seed": seed,
        "calls": CALLS,
        "dispositions": {d: dispositions[d] for d in reference.DISPOSITIONS},
        "subscribed": sum(bool(o.get("subscribed")) for o in outcomes),
        "claims": 2,
        "claimed": CALLS,
        "refused": 0,
        "undecided": 0,
        "empty_claims": 0,
        "retried_503": 0,
        "uncalled": 0,
        "stopped": "calls",
        "elapsed_seconds": summary["elapsed_seconds"],
    }
    # every call was held for the agent first: its claim is on the queue topic
    claims = {
        r.json()["task_id"]
        for r in read_topics(settings, [settings.topic_queue])
        if r.value is not None and r.json().get("claimed_by") == agent
    }
    assert claims == set(by_task)
    return outcomes


def _check_queue(settings: Settings, api: StreamWorker, outcomes: list[dict[str, Any]]) -> None:
    """After every outcome so far: the withdrawals, the retries, the open tasks, do-not-call."""
    count = Counter(o["disposition"] for o in outcomes)
    recycled = [o for o in outcomes if o["disposition"] in RECYCLED]
    withdrawals = {
        "closed": count["reached"] + count["wrong_number"],  # attempts are left: 2 of 5
        "suppressed": count["do_not_call"],
        "recycled": len(recycled),
        "expired": 0,
    }
    api.wait_until(
        lambda: _queue(api)["withdrawals"] == withdrawals,
        WAIT_SECONDS,
        f"withdrawals {withdrawals} in the API's mirror",
    )
    # A call without a decision comes back as the task's event again, rescored; queued unless
    # its new score is below the floor (a callback always is).
    retry_ids = {retry_event_id(o["task_id"]): o for o in recycled}
    predictions = read_topics(
        settings,
        [settings.topic_predictions],
        done=lambda rs: set(retry_ids) <= {(r.key or b"").decode() for r in rs},
        timeout=WAIT_SECONDS,
    )
    retries = {
        (r.key or b"").decode(): PredictionRecord.model_validate_json(r.value or b"")
        for r in predictions
        if (r.key or b"").decode() in retry_ids
    }
    assert set(retries) == set(retry_ids)
    requeued = {
        retry_ids[event_id]["prospect_id"]: retry
        for event_id, retry in retries.items()
        if retry.retry_reason == "callback" or retry.score >= settings.retry_min_score
    }
    open_total = PROSPECTS - len(outcomes) + len(requeued)
    api.wait_until(
        lambda: (_queue(api)["open_total"], _queue(api)["not_due"]) == (open_total, len(requeued)),
        WAIT_SECONDS,
        f"{open_total} open tasks, {len(requeued)} of them retries not due yet",
    )

    newest = _newest(read_topics(settings, [settings.topic_queue]))
    for outcome in outcomes:
        record = newest[outcome["prospect_id"]]
        called_at = datetime.fromisoformat(outcome["called_at"])
        if outcome["prospect_id"] in requeued:
            task = record.json()
            assert task["retry_of"] == outcome["task_id"]
            assert task["event_id"] == retry_event_id(outcome["task_id"])
            assert task["attempt"] == 3  # the event's campaign 2, plus this call
            not_before = datetime.fromisoformat(task["not_before"])
            if outcome["disposition"] == "callback":
                assert not_before == datetime.fromisoformat(outcome["callback_at"])
            else:
                hours = getattr(settings, f"retry_after_{outcome['disposition']}_hours")
                assert not_before == called_at + timedelta(hours=hours)
        else:  # withdrawn: closed, suppressed, or recycled without a retry (below the floor)
            reason = WITHDRAWN.get(outcome["disposition"], "recycled")
            assert record.value is None, (outcome, record)
            assert record.headers["withdrawn"] == reason.encode()

    # a do_not_call disposition is the prospect's entry on the do-not-call topic
    objections = {o["prospect_id"]: o for o in outcomes if o["disposition"] == "do_not_call"}
    entries = read_topics(
        settings,
        [settings.topic_do_not_call],
        done=lambda rs: len(rs) >= len(objections),
        timeout=WAIT_SECONDS,
    )
    assert len(entries) == len(objections)
    for record in entries:
        entry = DoNotCallEntry.model_validate_json(record.value or b"")
        assert record.key == entry.prospect_id.encode()
        assert entry.source == "call-outcome"
        assert entry.requested_at == datetime.fromisoformat(
            objections[entry.prospect_id]["called_at"]
        )


def test_python_and_node_dialers_claim_call_and_report(
    kafka_settings: Settings, tmp_path: Path, scorer_and_api: Any
) -> None:
    node_problem = _node_problem()
    settings = worker_settings(kafka_settings, tmp_path, api_token=TOKEN)
    _scorer, api = scorer_and_api(settings)

    # Twelve prospects of an hour ago (retries happen now: older events would expire first).
    occurred = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    events = [
        valid_event(
            event_id=f"dial-{i}",
            prospect_id=f"D{i}",
            occurred_at=occurred,
            age=25 + 4 * i,
            balance=i * 700,
            housing="no" if i % 2 else "yes",
            **({"poutcome": "success", "pdays": 30 + i, "previous": 2} if i % 3 == 0 else {}),
        )
        for i in range(PROSPECTS)
    ]
    produce(settings, [event_bytes(e) for e in events])
    api.wait_until(
        lambda: _queue(api)["open_total"] == PROSPECTS,
        WAIT_SECONDS,
        f"{PROSPECTS} open tasks in the API's mirror",
    )
    ranked = _queue(api)["tasks"]  # best first, as claims hand them out
    assert len(ranked) == PROSPECTS

    # A wrong token: one line, exit 1, nothing published.
    for client in ("python",) if node_problem else ("python", "node"):
        _one_line_error(_run(client, settings, "--calls", "1", CALLSCORE_API_TOKEN="x"), "401")
    assert read_topics(settings, [settings.topic_outcomes]) == []

    args = ("--calls", str(CALLS), "--batch", str(BATCH), "--dispositions", SHARES)
    seen: set[tuple[int, int]] = set()
    outcomes: list[dict[str, Any]] = []
    for client, expected in (("python", ranked[:CALLS]), ("node", ranked[CALLS:])):
        if client == "node" and node_problem:
            break
        seed, options = RUNS[client]
        start = datetime.now(UTC) - timedelta(seconds=1)  # called_at is in whole milliseconds
        done = _run(
            client, settings, *args, *options, "--agent", f"{client}-dialer", "--seed", str(seed)
        )
        window = (start, datetime.now(UTC))
        outcomes += _check_run(client, done, settings, expected, window, seen)
        seen |= {(r.partition, r.offset) for r in read_topics(settings, [settings.topic_outcomes])}
        _check_queue(settings, api, outcomes)

    assert len({o["task_id"] for o in outcomes}) == len(outcomes)  # no task called twice
    if node_problem:
        pytest.skip(f"the Python dialer passed; the Node dialer did not run: {node_problem}")
    assert {o["task_id"] for o in outcomes} == {t["task_id"] for t in ranked}


@pytest.mark.parametrize("client", ["python", "node"])
def test_dialer_errors_are_one_line(client: str, kafka_settings: Settings, tmp_path: Path) -> None:
    if client == "node" and (problem := _node_problem()):
        pytest.skip(problem)
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    quick = ("--calls", "1", "--http-timeout", "5")

    nobody = f"http://127.0.0.1:{free_port()}"
    _one_line_error(_run(client, settings, *quick, "--api", nobody), "API", "unreachable", nobody)
    away = f"127.0.0.1:{free_port()}"
    _one_line_error(
        _run(client, settings, *quick, "--connect-timeout", "1", CALLSCORE_BOOTSTRAP_SERVERS=away),
        "broker",
        away,
    )
    _one_line_error(
        _run(client, settings, *quick, "--api", nobody, CALLSCORE_TOPIC_OUTCOMES="no-such-topic"),
        "no-such-topic",
    )
    assert read_topics(settings, [settings.topic_outcomes]) == []


Answer = tuple[int, dict[str, str], dict[str, Any]]


@contextmanager
def _fake_api(answers: list[Answer]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP server answering POST /queue/claim with `answers` in turn (then the last one
    again), recording each request's path, Authorization header and body."""
    requests: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append(
                {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
            )
            status, headers, document = answers[min(len(requests), len(answers)) - 1]
            payload = json.dumps(document).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("client", ["python", "node"])
def test_dialer_retries_a_503_and_stops_when_idle_or_out_of_time(
    client: str, kafka_settings: Settings, tmp_path: Path
) -> None:
    if client == "node" and (problem := _node_problem()):
        pytest.skip(problem)
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    busy: Answer = (503, {"Retry-After": "1"}, {"error": "the call queue is still being read"})
    empty: Answer = (
        200,
        {},
        {
            "agent": "ana",
            "lease_until": datetime.now(UTC).isoformat(),
            "tasks": [],
            "proposed": 0,
            "refused": 0,
            "undecided": 0,
        },
    )
    claim = ("--agent", "ana", "--tier", "high", "--batch", "3", "--idle-wait", "0.1")

    # a 503 is retried after its Retry-After; two empty claims in a row end the run
    with _fake_api([busy, empty]) as (url, requests):
        done = _run(
            client, settings, *claim, "--api", url, "--idle-exit", "2", CALLSCORE_API_TOKEN="t0k"
        )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    calls, summary = _parse(done.stdout)
    assert calls == []
    expected = {"calls": 0, "claims": 2, "empty_claims": 2, "retried_503": 1, "stopped": "idle"}
    assert {k: summary[k] for k in expected} == expected
    assert summary["elapsed_seconds"] >= 1.0  # it waited for the Retry-After
    assert requests == 3 * [
        {
            "path": "/queue/claim",
            "auth": "Bearer t0k",
            "body": {"agent": "ana", "n": 3, "tier": "high"},
        }
    ]

    # --idle-exit 0: empty claims go on until --seconds is up
    with _fake_api([empty]) as (url, requests):
        done = _run(client, settings, *claim, "--api", url, "--idle-exit", "0", "--seconds", "1")
    assert done.returncode == 0, done.stderr
    _, summary = _parse(done.stdout)
    assert summary["stopped"] == "seconds" and summary["claims"] >= 3
    assert all(r["auth"] is None for r in requests)  # no CALLSCORE_API_TOKEN: no header

    # a 503 that does not go away: one line, exit 1
    with _fake_api([busy]) as (url, requests):
        done = _run(client, settings, *claim, "--api", url, "--max-retries", "1")
    _one_line_error(done, "503", "still being read")
    assert len(requests) == 2
