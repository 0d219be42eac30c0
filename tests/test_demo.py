"""The README's first command, `callscore demo`, end to end and interrupted, in a subprocess;
its parts (data fallback, broker fallback, live state, reconciliation, the served-version probe,
the dialer agent's claims) without a broker.

Synthetic data and no download (tests never use the network; the download is tried against a
local server), except for the README's own command, `./scripts/demo` with its default options on
the UCI data of ../shared/data. The short end-to-end run uses the session's broker as a
"configured Kafka" (topics of its own); the interrupted one and the README's start their own
Apache Kafka, so Ctrl-C and the end must take the broker down too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callqueue.rules import retry_event_id
from callscore.demo.agent import ClaimStats, DemoAgent
from callscore.demo.data import download_bank_full, resolve_demo_data
from callscore.demo.options import DemoOptions
from callscore.demo.probes import served_version
from callscore.demo.reconcile import count
from callscore.demo.setup import TANSU_PROSPECTS, set_up
from callscore.demo.state import DemoState
from callscore.demo.view import plain_status, render
from callscore.demo.window import replay_start
from callscore.processes import Children
from core.local_broker import BROKER_TIMINGS, LocalBroker, LocalBrokerError
from core.local_broker.kafka import kafka_version
from core.topic_reader import Record
from schemas import FEATURES, CallTask, DeadLetter, task_id_for
from schemas.api import ClaimAnswer
from trainer.data import SHARED_COPY, DataError, add_periods, load_bank
from trainer.synthetic import synthetic_bank_frame

ROOT = Path(__file__).resolve().parents[1]
DEMO = [sys.executable, "-m", "callscore.cli", "demo", "--synthetic", "--no-download"]
# A short replay: enough outcomes for the recalibration halfway, a few malformed events.
SHORT = ["--prospects", "500", "--replay-seconds", "16", "--bad-rate", "0.03"]
# Lines only Faust, the scorer or the monitor write (they belong in the log files).
WORKER_LOG_MARKS = ("[^Worker]", "[INFO]", "[WARNING]", "faust", "aiokafka")
# The README's run (UCI data, default options) takes 2-3 minutes on 2 cores; this bounds it
# (a first ./scripts/demo also installs the project into .venv).
README_DEMO_TIMEOUT_SECONDS = 600


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCORE_")}
    return {**env, **extra}


def _pids(out: Path) -> dict[str, int]:
    pid_file = out / "pids"
    if not pid_file.is_file():
        return {}
    pairs = (line.split() for line in pid_file.read_text().splitlines() if line.strip())
    return {name: int(pid) for name, pid in pairs}


def _alive(pid: int) -> bool:
    """Running and not a zombie (an exited child nobody reaped is not alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_members_after_a_moment(pgids: set[int], timeout: float = 10.0) -> list[int]:
    """Live members once SIGKILLed ones had time to die (they are not our children to wait)."""
    deadline = time.monotonic() + timeout
    while (members := _group_members(pgids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return members


def _group_members(pgids: set[int]) -> list[int]:
    """Live processes in any of these process groups (each child leads its own group)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) in pgids:
            members.append(int(entry.name))
    return members


@pytest.mark.slow
def test_demo_runs_reloads_recycles_claims_and_reconciles_on_a_configured_kafka(
    kafka_broker, tmp_path
):
    out = tmp_path / "demo"
    env = _env(CALLSCORE_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers)
    # The session broker's client timings (a configured Kafka keeps the user's own; Kafka
    # refuses Tansu's 3 s session).
    env |= {f"CALLSCORE_{k.upper()}": str(v) for k, v in kafka_broker.client_settings().items()}
    result = subprocess.run(
        [*DEMO, *SHORT, "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    terminal = result.stdout + result.stderr
    assert result.returncode == 0, terminal[-4000:]

    summary = json.loads((out / "summary.json").read_text())
    counts = summary["reconciliation"]
    assert counts["reconciles"] is True
    assert counts["produced"] == (counts["scored"] + counts["dead_lettered"] + counts["duplicates"])
    assert counts["scored"] >= 500 and counts["dead_lettered"] > 0
    assert "reconciles ✓" in result.stdout
    # With attempts: the queue recycled calls without a decision and sent each prospect back, a
    # retry on the prospects topic, scored (and counted) like any other event.
    assert counts["retries"] > 0 and counts["produced"] - counts["replayed"] >= counts["retries"]
    recycles = summary["recycles"]
    assert recycles["recycled"] > 0 and recycles["withdrawn_recycled"] > 0
    assert recycles["retries"] == counts["retries"]
    assert min(int(attempt) for attempt in recycles["retry_tasks"]) == 2
    calls = summary["calls"]
    assert calls["callbacks"] > 0 and calls["by_disposition"]["reached"] > 0
    assert calls["total"] == sum(calls["by_disposition"].values())
    assert {"no_answer", "busy", "voicemail", "callback"} <= set(calls["by_disposition"])
    # The demo's agent claimed tasks from `callscore api`, each held with a lease.
    claims = summary["claims"]
    assert claims["agent"] == "demo-agent" and claims["granted"] > 0 and claims["last"]
    assert all(c["agent"] == "demo-agent" and c["lease_until"] for c in claims["last"])
    assert claims["queue"]["granted"] > 0
    for shown in ("recycles", "callbacks", "claims", "demo-agent"):
        assert shown in result.stdout, shown
    # The call queue: every scored event is logged or suppressed; a task is a logged event that
    # the scorer queued; dialers' calls withdrew tasks as they happened.
    assert counts["scored"] == counts["logged"] + counts["suppressed"]
    queue = summary["queue"]
    assert queue["scorer"]["queued"] >= counts["queued"] > 0
    assert queue["withdrawals"]["closed"] > 0 and set(queue["open"]) == {"high", "medium", "low"}
    assert "call queue, best first" in result.stdout or "queue open" in result.stdout
    assert summary["broker"].startswith(f"Kafka at {kafka_broker.bootstrap_servers}")

    # Midway a recalibration is published and the scorer hot-reloads it.
    assert summary["hot_reloads"] and summary["hot_reloads"][0].startswith("v1 -> v2")
    assert "hot reload: v1 → v2" in result.stdout
    assert any("recalibration of v1" in line for line in summary["published"])
    # Outcomes flowed: the monitor's online quality of the first version is in the summary.
    assert summary["online_quality"]["1"]["outcomes"] > 0

    # The model card and the quality report exist where the summary says.
    assert Path(summary["model_card"]).is_file()
    assert Path(summary["quality_report"]).is_file()
    assert (Path(summary["quality_report"]).parent / "quality.json").is_file()
    assert "synthetic" in terminal  # the warning is visible

    # Worker and broker logs are in files, never on the terminal.
    logs = out / "logs"
    assert "[^Worker]" in (logs / "stream.log").read_text()
    for name in ("train", "monitor", "api", "simulate", "recalibrate", "report"):
        assert (logs / f"{name}.log").is_file(), name
    assert "serving model" in (logs / "api.log").read_text()  # its claims: in the summary
    for mark in WORKER_LOG_MARKS:
        assert mark not in terminal, mark

    # Every process it started is gone.
    pids = _pids(out)
    assert {"stream", "monitor", "api", "train", "simulate", "report"} <= set(pids)
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert _group_members_after_a_moment(set(pids.values())) == []


@pytest.mark.slow
def test_ctrl_c_stops_every_process_including_the_embedded_broker(tmp_path):
    out = tmp_path / "demo"
    # Started the way a non-interactive shell starts a background job, with SIGINT ignored
    # (CI did): Ctrl-C must stop the demo all the same.
    demo = subprocess.Popen(
        [*DEMO, *SHORT, "--out", str(out)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # Midway through starting up: broker, trainer, scorer, monitor and API all running.
        while not {"broker", "train", "stream", "monitor", "api"} <= set(_pids(out)):
            assert demo.poll() is None, demo.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "the demo did not start its processes"
            time.sleep(0.2)
        stream_log = out / "logs" / "stream.log"
        while not stream_log.is_file() or stream_log.stat().st_size == 0:
            assert time.monotonic() < deadline, "the scorer wrote nothing"
            time.sleep(0.2)
        pids = _pids(out)
        assert all(_alive(pid) for pid in pids.values())
        demo.send_signal(signal.SIGINT)
        output = demo.communicate(timeout=120)[0].decode()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130, output[-3000:]
    assert "interrupted" in output
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert _group_members_after_a_moment(set(pids.values())) == []
    assert "Traceback" not in output


@pytest.mark.slow
@pytest.mark.timeout(README_DEMO_TIMEOUT_SECONDS + 180)
def test_the_readmes_demo_runs_on_the_uci_data_on_apache_kafka_and_reconciles(tmp_path):
    """`./scripts/demo` as the README says (default options; only its output folder is the
    test's): the UCI data from ../shared/data, Apache Kafka started by the demo."""
    if not SHARED_COPY.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI copies ../shared beside the clone, but {SHARED_COPY} is missing")
        pytest.skip(f"no UCI data at {SHARED_COPY}")
    out = tmp_path / "demo"
    demo = subprocess.Popen(
        [str(ROOT / "scripts" / "demo"), "--out", str(out)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        terminal = demo.communicate(timeout=README_DEMO_TIMEOUT_SECONDS)[0]
    except subprocess.TimeoutExpired:
        terminal = _interrupt(demo)
        pytest.fail(f"the demo ran over {README_DEMO_TIMEOUT_SECONDS} s:\n{terminal[-4000:]}")
    finally:
        if demo.poll() is None:  # the test itself was interrupted
            _interrupt(demo)
    assert demo.returncode == 0, terminal[-4000:]

    summary = json.loads((out / "summary.json").read_text())
    counts = summary["reconciliation"]
    assert counts["reconciles"] is True and "reconciles ✓" in terminal
    assert counts["produced"] == counts["scored"] + counts["dead_lettered"] + counts["duplicates"]
    assert summary["broker"].startswith(f"Apache Kafka {kafka_version()} at 127.0.0.1:")
    assert summary["broker"].endswith("(started by the demo)")
    assert not summary["synthetic"] and "bank-full" in summary["data"]
    frame, _sha = load_bank(SHARED_COPY)
    assert summary["replay"]["from"] == replay_start(frame, DemoOptions().prospects)
    assert counts["replayed"] > DemoOptions().prospects and counts["retries"] > 0
    assert summary["hot_reloads"] and summary["hot_reloads"][0].startswith("v1 -> v2")
    print(f"README demo: {summary['elapsed_seconds']} s, phases {summary['phase_seconds']}")

    # Every process it started is gone, Apache Kafka's too.
    pids = _pids(out)
    assert {"broker", "stream", "monitor", "api", "train", "simulate", "report"} <= set(pids)
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert _group_members_after_a_moment(set(pids.values())) == []


def _interrupt(demo: subprocess.Popen[str]) -> str:
    """Ctrl-C, so that the demo stops every process it started (a SIGKILL would leave them
    running); SIGKILL only if it does not end within two minutes. Its output."""
    demo.send_signal(signal.SIGINT)
    try:
        return demo.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        demo.kill()
        return demo.communicate()[0]


# --- without a broker ----------------------------------------------------------------------------


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers (a download that hangs)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/bank+marketing.zip"
    server.close()


def test_a_hanging_download_gives_up_within_its_timeout(settings, tmp_path, silent_server):
    started = time.monotonic()
    with pytest.raises(DataError, match="could not download"):
        download_bank_full(settings, tmp_path, timeout=1.0, url=silent_server)
    assert time.monotonic() - started < 30  # bounded, whatever the machine


def test_without_data_a_failed_download_falls_back_to_synthetic_with_a_warning(
    settings, tmp_path, monkeypatch, silent_server
):
    import trainer.data
    import trainer.fetch

    monkeypatch.setattr(trainer.data, "SHARED_COPY", tmp_path / "absent.csv.gz")
    monkeypatch.setattr(trainer.fetch, "UCI_URL", silent_server)
    empty = settings.model_copy(update={"data": None, "data_cache_dir": tmp_path / "cache"})
    data = resolve_demo_data(empty, tmp_path / "work", None, synthetic=False, download_timeout=1)
    assert data.synthetic and data.warning is not None
    assert "download failed" in data.warning and "synthetic" in data.warning
    # --no-download (timeout 0) skips the attempt; an explicit missing file is an error.
    data = resolve_demo_data(empty, tmp_path / "work", None, synthetic=False, download_timeout=0)
    assert data.synthetic and "no training data" in (data.warning or "")
    with pytest.raises(DataError, match="not found"):
        resolve_demo_data(empty, tmp_path / "w", tmp_path / "missing.csv", False, 0)


def test_the_replay_takes_the_latest_months_and_leaves_half_for_training():
    frame = add_periods(synthetic_bank_frame(rows=3000))
    start = replay_start(frame, prospects=400)
    replayed = (frame["period"] >= start).sum()
    assert replayed >= 400
    # One month earlier would have been enough already: it is the latest such month.
    assert (frame["period"] > start).sum() < 400
    huge = replay_start(frame, prospects=10**6)
    assert (frame["period"] >= huge).sum() <= len(frame) / 2


def _record(
    topic: str,
    value: bytes | None,
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = None,
    headers: dict[str, bytes] | None = None,
) -> Record:
    return Record(topic, partition, offset, key, value, headers or {}, 0)


def _task(
    event_id: str,
    priority: str,
    score: float,
    version: int = 1,
    prospect: str | None = None,
    attempt: int | None = None,
) -> bytes:
    task = {
        "task_id": task_id_for(event_id),
        "event_id": event_id,
        "prospect_id": prospect or f"p-{event_id}",
        "score": score,
        "priority": priority,
        "percentile": 50.0,
        "model_version": version,
        "scored_at": "2026-11-26T10:00:00+00:00",
    }
    if attempt is not None:
        task["attempt"] = attempt
    return json.dumps(task).encode()


def _logged(event_id: str, priority: str, score: float, version: int = 1) -> bytes:
    """The event's prediction-log line (what the scorer's queue writes for a scored event)."""
    task = json.loads(_task(event_id, priority, score, version))
    line = {
        **{k: task[k] for k in ("event_id", "task_id", "prospect_id", "score", "priority")},
        **{k: task[k] for k in ("percentile", "model_version", "scored_at")},
        "occurred_at": "2026-11-26T09:00:00+00:00",
        "features": dict.fromkeys(FEATURES, 0),
    }
    return json.dumps(line).encode()


def _dead(offset: int, kind: str, topic: str) -> bytes:
    letter = DeadLetter(
        payload=b"{", payload_size=1, source_topic=topic, source_partition=0,
        source_offset=offset, error_kind=kind, message="bad",
        received_at="2026-11-26T10:00:00+00:00",
    )  # fmt: skip
    return letter.model_dump_json().encode()


def _queued(settings, event_id: str, priority: str, score: float) -> Record:
    """The event's task as the prospect's entry on the call-queue topic."""
    key = f"p-{event_id}".encode()
    return _record(settings.topic_queue, _task(event_id, priority, score), key=key)


def _withdrawn(settings, event_id: str, reason: str) -> Record:
    """A call-queue tombstone: the prospect's task withdrawn for `reason`."""
    headers = {"task_id": task_id_for(event_id).encode(), "withdrawn": reason.encode()}
    return _record(settings.topic_queue, None, key=f"p-{event_id}".encode(), headers=headers)


def _retry(settings, event_id: str, offset: int) -> Record:
    """The call queue's retry of the event's task, on the prospects topic (callqueue/rules.py)."""
    retry_of = task_id_for(event_id)
    value = {
        "event_id": retry_event_id(retry_of),
        "prospect_id": f"p-{event_id}",
        "campaign": 2,
        "retry_of": retry_of,
        "retry_reason": "no_answer",
    }
    headers = {"retry_of": retry_of.encode()}
    return _record(settings.topic_prospects, json.dumps(value).encode(), 0, offset, None, headers)


def _retry_task(settings, event_id: str, priority: str, score: float) -> Record:
    """The retry's task (attempt 2) as the prospect's entry on the call-queue topic."""
    retry_id = retry_event_id(task_id_for(event_id))
    value = _task(retry_id, priority, score, prospect=f"p-{event_id}", attempt=2)
    return _record(settings.topic_queue, value, key=f"p-{event_id}".encode())


def _outcome(settings, event_id: str, disposition: str) -> Record:
    outcome: dict[str, object] = {
        "event_id": event_id,
        "task_id": task_id_for(event_id),
        "prospect_id": f"p-{event_id}",
        "called_at": "2026-11-26T11:00:00+00:00",
        "disposition": disposition,
    }
    if disposition == "reached":
        outcome |= {"subscribed": False, "duration_seconds": 60}
    if disposition == "callback":
        outcome["callback_at"] = "2026-11-27T11:00:00+00:00"
    return _record(settings.topic_outcomes, json.dumps(outcome).encode())


def _records(settings) -> list[Record]:
    high, low = settings.task_topic("high"), settings.task_topic("low")
    prospects, log = settings.topic_prospects, settings.topic_predictions
    return [
        _record(prospects, b'{"event_id": "e1"}', offset=0),
        _record(prospects, b'{"event_id": "e2"}', offset=1),
        _record(prospects, b"{", offset=2),
        _record(log, _logged("e1", "high", 0.9)),
        _record(high, _task("e1", "high", 0.9)),
        _queued(settings, "e1", "high", 0.9),
        _record(log, _logged("e2", "low", 0.1, version=2)),
        _record(log, _logged("e2", "low", 0.1, version=2)),  # rescored: counted once
        _record(low, _task("e2", "low", 0.1, version=2)),
        _record(low, _task("e2", "low", 0.1, version=2)),
        _queued(settings, "e2", "low", 0.1),
        _record(settings.topic_dead_letters, _dead(2, "not_json", prospects)),
    ]


def _suppressed(settings, event_id: str, offset: int) -> list[Record]:
    """An event of a do-not-call prospect: on the prospects topic and, as the scorer handed it
    to the queue, on its input topic; nowhere else."""
    scored = {"kind": b"scored"}
    return [
        _record(settings.topic_prospects, json.dumps({"event_id": event_id}).encode(), 0, offset),
        _record(settings.topic_queue_inputs, _logged(event_id, "low", 0.2), headers=scored),
    ]


def test_counts_reconcile_from_distinct_ids_and_offsets(settings):
    result = count(settings, _records(settings))
    assert (result.produced, result.scored, result.dead_lettered) == (3, 2, 1)
    assert (result.logged, result.suppressed, result.queued) == (2, 0, 2)
    assert result.reconciles
    assert result.dead_by_kind == {"not_json": 1}
    assert result.queue_open == {"high": 1, "medium": 0, "low": 1}

    lost = count(settings, _records(settings)[:-1])  # a dead letter missing
    assert not lost.reconciles
    stranger = _record(settings.task_topic("high"), _task("e9", "high", 0.5))
    assert not count(settings, [*_records(settings), stranger]).reconciles
    # Not every scored event is a task: a suppressed one is only on the queue's input topic.
    suppressed = count(settings, [*_records(settings), *_suppressed(settings, "e3", 3)])
    assert (suppressed.produced, suppressed.scored, suppressed.dead_lettered) == (4, 3, 1)
    assert (suppressed.logged, suppressed.suppressed, suppressed.queued) == (2, 1, 2)
    assert suppressed.reconciles
    # A late event is logged but opens no task; an event scored nowhere is missing.
    late = [
        _record(settings.topic_prospects, b'{"event_id": "e4"}', offset=4),
        _record(settings.topic_predictions, _logged("e4", "low", 0.3)),
    ]
    assert count(settings, [*_records(settings), *late]).reconciles
    assert not count(settings, [*_records(settings), late[0]]).reconciles


def test_retries_are_produced_and_scored_and_one_sent_twice_is_a_duplicate(settings):
    retry_id = retry_event_id(task_id_for("e1"))
    retried = [
        _outcome(settings, "e1", "no_answer"),
        _retry(settings, "e1", offset=3),
        _record(settings.topic_predictions, _logged(retry_id, "high", 0.8)),
        _record(settings.task_topic("high"), _task(retry_id, "high", 0.8, attempt=2)),
    ]
    result = count(settings, [*_records(settings), *retried])
    assert (result.produced, result.replayed, result.retries) == (4, 3, 1)
    assert (result.scored, result.dead_lettered, result.duplicates) == (3, 1, 0)
    assert result.reconciles and result.retry_tasks == {2: 1}
    assert result.calls == {"no_answer": 1}
    # A redelivered outcome: the queue sends the same retry again, which the scorer drops.
    again = _retry(settings, "e1", offset=4)
    twice = count(settings, [*_records(settings), *retried, again])
    assert (twice.produced, twice.retries, twice.scored, twice.duplicates) == (5, 1, 3, 1)
    assert twice.reconciles and twice.as_dict()["duplicates"] == 1
    # A retry never scored is missing, as any event.
    assert not count(settings, [*_records(settings), retried[1]]).reconciles
    # Calls by disposition count valid outcomes only.
    calls = [_outcome(settings, "e2", "callback"), _record(settings.topic_outcomes, b"{")]
    assert count(settings, [*_records(settings), *retried, *calls]).calls == {
        "no_answer": 1,
        "callback": 1,
    }


def test_the_served_version_is_the_scorers_gauge():
    gauge = "# TYPE callscore_model_version gauge\ncallscore_model_version {}\n"
    assert served_version(gauge.format("2.0")) == 2
    assert served_version(gauge.format("0.0")) is None  # no model yet
    assert served_version('callscore_queue_inputs_total{result="queued"} 3.0\n') is None
    assert served_version("not { prometheus") is None


def test_live_state_counts_retries_callbacks_attempts_claims_and_knows_when_drained(settings):
    state = DemoState(settings, time.monotonic())
    state.expected, state.expected_outcomes = 3, 3
    state.add_records(_records(settings))
    assert state.handled == state.expected and not state.drained()  # no outcome read yet
    # e1's call reached no one, e2's asks for a callback; one outcome is malformed.
    state.add_records(
        [
            _outcome(settings, "e1", "no_answer"),
            _outcome(settings, "e2", "callback"),
            _record(settings.topic_outcomes, b"{"),
        ]
    )
    assert state.outcomes == 3 and state.calls == {"no_answer": 1, "callback": 1}
    assert state.callbacks == 1 and not state.drained()  # the scorer has not routed them
    metrics = (
        'callscore_queue_inputs_total{result="queued"} 2.0\n'
        'callscore_queue_inputs_total{result="recycled"} 2.0\n'
        'callscore_queue_withdrawals_total{reason="recycled"} 2.0\n'
        f'callscore_queue_routed_total{{source="{settings.topic_outcomes}",result="routed"}} 2.0\n'
        f'callscore_queue_routed_total{{source="{settings.topic_outcomes}",result="invalid"}} 1.0\n'
        'callscore_queue_routed_total{source="do-not-call",result="routed"} 5.0\n'
    )
    state.set_scorer_metrics(metrics)
    assert state.recycled == 2 and state.queue_withdrawn == {"recycled": 2}
    assert state.outcomes_routed == {"routed": 2, "invalid": 1}
    # The queue withdrew both tasks as recycled and sent two retries: one is read so far.
    state.add_records(
        [
            _withdrawn(settings, "e1", "recycled"),
            _withdrawn(settings, "e2", "recycled"),
            _retry(settings, "e1", offset=3),
        ]
    )
    assert (state.produced, state.retries) == (3, 1) and not state.drained()
    state.add_records([_retry(settings, "e2", offset=4), _retry(settings, "e2", offset=5)])
    assert state.retries == 3 and len(state.retry_ids) == 2  # the last one a repeat
    assert not state.drained()  # read, not scored yet
    retries = [retry_event_id(task_id_for(e)) for e in ("e1", "e2")]
    state.add_records(
        [
            _record(settings.topic_predictions, _logged(retries[0], "high", 0.8)),
            _record(settings.topic_predictions, _logged(retries[1], "low", 0.2)),
            _retry_task(settings, "e1", "high", 0.8),
            _retry_task(settings, "e2", "low", 0.2),
        ]
    )
    assert state.handled == 5 and state.drained()
    assert state.retry_tasks_by_attempt() == {2: 2} and state.open_retries == 2
    state.add_records([_withdrawn(settings, "e1", "closed")])
    assert state.open_retries == 1 and len(state.retry_tasks) == 2
    texts = [e.text for e in state.events]
    for first in ("first retry sent", "first retry queued (attempt 2)", "first callback"):
        assert any(first in text for text in texts), (first, texts)
    # Without the queue there is no routing nor retry: what was produced handled is drained.
    plain = DemoState(settings.model_copy(update={"queue_enabled": False}), time.monotonic())
    plain.expected = 3
    plain.add_records(_records(settings))
    assert plain.drained()

    # The monitor has consumed every outcome and every prediction-log line seen.
    assert not state.monitor_caught_up()
    state.set_monitor_metrics(
        "callscore_outcomes_consumed_total 3.0\ncallscore_online_predictions_consumed_total 4.0\n"
    )
    assert state.monitor_caught_up()

    # The agent's claims: an event for the first ones, the counts and the last on the screen.
    lease = datetime(2026, 12, 1, 10, 15, tzinfo=UTC)
    answer = ClaimAnswer(
        agent="demo-agent",
        lease_until=lease,
        tasks=[_claimed(settings, "e5", 0.7), _claimed(settings, "e6", 0.4)],
        proposed=3,
        refused=1,
        undecided=0,
    )
    state.set_claims(ClaimStats().answered(answer))
    assert any("demo-agent claimed p-e5 and 1 more" in e.text for e in state.events)
    line = plain_status(state)
    assert "(+3 retries)" in line and "callbacks 1, recycled 2" in line, line
    assert "retry tasks 2 (1 open)" in line and "calls 2 (no answer 1, callback 1)" in line
    assert "claims granted 2 refused 1 undecided 0" in line
    from rich.console import Console

    for width in (150, 80):
        console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        console.print(render(state, "header", None))
        screen = console.export_text()
        assert max(len(line) for line in screen.splitlines()) <= width
        for shown in ("claims", "recycles", "callbacks", "attempts", "p-e5", "10:15:00"):
            assert shown in screen, (shown, screen)
        assert "2 granted, 1 refused, 0 undecided" in " ".join(screen.split()), screen


def _claimed(settings, event_id: str, score: float) -> CallTask:
    task = CallTask.model_validate_json(_task(event_id, "medium", score))
    lease = datetime(2026, 12, 1, 10, 15, tzinfo=UTC)
    return task.model_copy(
        update={"claim_id": f"c-{event_id}", "claimed_by": "demo-agent", "lease_until": lease}
    )


Answers = list[tuple[int, bytes, float]]


@pytest.fixture
def claim_api() -> Iterator[tuple[int, Answers, list[dict[str, object]]]]:
    """A stand-in for `callscore api`'s POST /queue/claim: answers (status, body, delay) in turn,
    then 503; the bodies it was sent."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers: Answers = []
    bodies: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status, body, delay = answers.pop(0) if answers else (503, b'{"error": "wait"}', 0)
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], answers, bodies
    server.shutdown()
    server.server_close()


def test_the_agent_claims_in_a_thread_of_its_own_and_skips_a_busy_api(settings, claim_api):
    port, answers, bodies = claim_api
    lease = datetime(2026, 12, 1, 10, 15, tzinfo=UTC)
    granted = ClaimAnswer(
        agent="demo-agent",
        lease_until=lease,
        tasks=[_claimed(settings, "e1", 0.9), _claimed(settings, "e2", 0.5)],
        proposed=3,
        refused=0,
        undecided=1,
    )
    # The mirror still reading (503), then an answer that takes its time (the queue deciding).
    answers += [
        (503, b'{"error": "still reading"}', 0.0),
        (200, granted.model_dump_json().encode(), 1.0),
    ]
    agent = DemoAgent(settings.model_copy(update={"api_port": port}), every=0.05)
    agent.start()
    try:
        deadline = time.monotonic() + 10
        while len(bodies) < 2:  # the second request is in flight
            assert time.monotonic() < deadline
            time.sleep(0.01)
        asked = time.monotonic()
        assert agent.stats().requests == 0 and agent.stats().skipped == 1
        assert time.monotonic() - asked < 0.1  # the view's tick never waits for a claim
        while agent.stats().requests == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        agent.stop(wait=2.0)
    stats = agent.stats()
    assert bodies[0] == {"agent": "demo-agent", "n": 3, "tier": None}
    assert (stats.requests, stats.granted, stats.refused, stats.undecided) == (1, 2, 0, 1)
    assert [c.prospect_id for c in stats.last] == ["p-e1", "p-e2"]
    assert stats.last[0].lease_until == lease and stats.last[0].agent == "demo-agent"
    assert not agent.running
    # An API that is not up: counted as unanswered, nothing else.
    from core.local_broker import free_port

    down = DemoAgent(settings.model_copy(update={"api_port": free_port()}))
    down.claim_once()
    assert (down.stats().unanswered, down.stats().requests, down.stats().skipped) == (1, 0, 0)


def test_live_state_queue_counters_reload_and_quality(settings):
    state = DemoState(settings, time.monotonic())
    state.expected = 3
    state.add_records(_records(settings))
    assert (state.produced, state.scored, state.dead_lettered) == (3, 2, 1)
    assert state.by_version == {1: 1, 2: 1}
    assert [t.event_id for t in state.top()] == ["e1", "e2"]  # by score
    # The call is made: the queue withdraws the task (closed), and it leaves the top.
    outcome = json.dumps({"event_id": "e1", "task_id": task_id_for("e1")}).encode()
    state.add_records(
        [_record(settings.topic_outcomes, outcome), _withdrawn(settings, "e1", "closed")]
    )
    assert [t.event_id for t in state.top()] == ["e2"] and state.outcomes == 1
    assert state.queue.withdrawals() == {
        "closed": 1,
        "recycled": 0,
        "expired": 0,
        "suppressed": 0,
    }
    assert any("first task withdrawn as closed" in e.text for e in state.events)
    state.add_records([_withdrawn(settings, "e2", "expired")])
    # The scorer's queue counts: a suppressed event is handled, with no log line.
    state.set_scorer_metrics(
        'callscore_queue_inputs_total{result="queued"} 2.0\n'
        'callscore_queue_inputs_total{result="late"} 1.0\n'
        'callscore_queue_inputs_total{result="cooling_down"} 3.0\n'
        'callscore_queue_inputs_total{result="suppressed"} 1.0\n'
    )
    assert (state.suppressed, state.scored, state.handled) == (1, 3, 4)

    assert state.set_serving(1) is not None
    assert state.set_serving(1) is None
    reload = state.set_serving(2)
    assert reload is not None and "hot reload: v1 → v2" in reload.text
    state.set_monitor_metrics(
        'callscore_online_outcomes{model_version="2"} 400.0\n'
        'callscore_online_roc_auc{model_version="2"} 0.71\n'
        'callscore_online_conversion_rate{model_version="2",priority="high"} 0.5\n'
        "callscore_outcomes_matched_total 400.0\n"
        'callscore_outcomes_dead_lettered_total{reason="not_json"} 2.0\n'
    )
    assert state.quality[2].roc_auc == pytest.approx(0.71) and state.matched == 400
    assert state.outcomes_dead == {"not_json": 2}
    line = plain_status(state)
    assert "produced 3/3" in line and "v2: 400 outcomes, AUC 0.710" in line
    assert "queue open high 0 medium 0 low 0" in line
    assert "withdrawn closed 1 recycled 0 expired 1 suppressed 0" in line and "late 1" in line
    from rich.console import Console

    for width in (150, 80):
        console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        console.print(render(state, "header", "synthetic data"))
        screen = console.export_text()
        assert "call queue" in screen and "hot reload: v1 → v2" in screen, screen
        assert "synthetic" in screen
        assert max(len(line) for line in screen.splitlines()) <= width
    # On 80 columns the queue panel shows every count in full.
    panel = [line.split("│")[1] for line in screen.splitlines() if line.startswith("│")]
    text = "\n".join(panel)
    for shown in ("open", "withdrawn", "closed", "expired", "suppressed", "cooling down", "late"):
        assert shown in text, text
    state.add_records([_queued(settings, "e5", "medium", 0.5)])
    console = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render(state, "header", None))
    screen = console.export_text()
    assert "p-e5" in screen and "medium" in screen


def test_children_are_listed_logged_and_stopped_with_their_process_groups(tmp_path):
    children = Children(tmp_path / "logs", tmp_path / "pids")
    # A child that leaves a grandchild behind, and one that ignores SIGTERM.
    spawner = children.start("spawner", ["sh", "-c", "echo started; sleep 300 & wait"], os.environ)
    stubborn = children.start(
        "stubborn", ["sh", "-c", "trap '' TERM; echo started; while :; do sleep 1; done"],
        os.environ,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while "started" not in spawner.log_text() or "started" not in stubborn.log_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pids = _pids(tmp_path)
    assert pids == {"spawner": spawner.process.pid, "stubborn": stubborn.process.pid}
    assert len(_group_members(set(pids.values()))) >= 3
    children.stop([spawner, stubborn], grace=1.0)
    assert not spawner.running and not stubborn.running
    assert _group_members_after_a_moment(set(pids.values())) == []


def _fake_brokers(started: list[str], java: bool):
    """start_local_broker's stand-in: Apache Kafka (or LocalBrokerError without `java`) and
    Tansu, each a `sleep` process in a session of its own."""

    def start(kind: str, log_dir: str | None = None, nodes: int = 1) -> LocalBroker:
        started.append(kind)
        if kind == "kafka" and not java:
            raise LocalBrokerError("Apache Kafka needs Java 17 and `java` is not on PATH: ...")
        process = subprocess.Popen(["sleep", "60"], start_new_session=True)
        origin = "Apache Kafka 3.9.1 (1 node)" if kind == "kafka" else "tansu"
        return LocalBroker("127.0.0.1:1", kind, origin, [process])  # type: ignore[arg-type]

    return start


@pytest.mark.parametrize("java", [True, False])
def test_the_demo_starts_apache_kafka_and_without_java_tansu_with_a_shorter_replay(
    tmp_path, monkeypatch, java
):
    import callscore.demo.setup as demo_setup

    monkeypatch.chdir(tmp_path)  # no .env
    for name in [n for n in os.environ if n.startswith("CALLSCORE_")]:
        monkeypatch.delenv(name)
    started: list[str] = []
    monkeypatch.setattr(demo_setup, "start_local_broker", _fake_brokers(started, java))
    children = Children(tmp_path / "logs", tmp_path / "pids")
    try:
        run = set_up(DemoOptions(), tmp_path, children)
        # The broker is the run's child "broker", stopped with the others.
        assert [c.name for c in children.all] == ["broker"] == list(_pids(tmp_path))
    finally:
        children.stop_all(last=children.all)
    kind = "kafka" if java else "tansu"
    assert started == (["kafka"] if java else ["kafka", "tansu"])
    timings = {name: getattr(run.settings, name) for name in BROKER_TIMINGS[kind]}
    assert timings == BROKER_TIMINGS[kind]  # never Tansu's on Kafka
    assert run.settings.bootstrap_servers == "127.0.0.1:1"
    if java:
        assert run.broker_label == "Apache Kafka 3.9.1 at 127.0.0.1:1 (started by the demo)"
        assert run.broker_warning is None and run.options == DemoOptions()
        return
    # One line: what is missing, that the demo runs on Tansu, and the shorter replay.
    assert run.broker_label == "Tansu at 127.0.0.1:1 (started by the demo)"
    warning = run.broker_warning
    assert warning is not None and "\n" not in warning
    assert warning.startswith("Apache Kafka needs Java 17 and `java` is not on PATH")
    assert "runs on Tansu" in warning and f"shortened to {TANSU_PROSPECTS:,} prospects" in warning
    assert run.options.prospects == TANSU_PROSPECTS < DemoOptions().prospects


def test_on_tansu_by_choice_the_replay_is_shortened_unless_its_months_are_given(
    tmp_path, monkeypatch
):
    import callscore.demo.setup as demo_setup

    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("CALLSCORE_")]:
        monkeypatch.delenv(name)
    started: list[str] = []
    monkeypatch.setattr(demo_setup, "start_local_broker", _fake_brokers(started, java=True))
    for options, prospects, warned in (
        (DemoOptions(broker="tansu"), TANSU_PROSPECTS, True),
        (DemoOptions(broker="tansu", prospects=800), 800, False),
        (DemoOptions(broker="tansu", start="2009-06"), DemoOptions().prospects, False),
    ):
        children = Children(tmp_path / "logs", tmp_path / "pids")
        try:
            run = set_up(options, tmp_path, children)
        finally:
            children.stop_all(last=children.all)
        assert run.options.prospects == prospects
        assert (run.broker_warning is not None) == warned
        assert run.broker_warning is None or run.broker_warning.startswith("--broker tansu: ")
    assert started == ["tansu"] * 3  # no attempt at Apache Kafka
