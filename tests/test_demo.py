"""The README's first command, `callscore demo`, end to end and interrupted, in a subprocess;
its parts (data fallback, live state, reconciliation) without a broker.

Synthetic data and no download (tests never use the network; the download is tried against a
local server). The end-to-end run uses the session's broker as a "configured Kafka" (topics of
its own); the interrupted one starts its embedded broker, so Ctrl-C must take the broker down too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callscore.demo.data import download_bank_full, resolve_demo_data
from callscore.demo.reconcile import count
from callscore.demo.state import DemoState
from callscore.demo.view import plain_status, render
from callscore.demo.window import replay_start
from callscore.processes import Children
from core.topic_reader import Record
from schemas import FEATURES, DeadLetter, task_id_for
from trainer.data import DataError, add_periods
from trainer.synthetic import synthetic_bank_frame

DEMO = [sys.executable, "-m", "callscore.cli", "demo", "--synthetic", "--no-download"]
# A short replay: enough outcomes for the recalibration halfway, a few malformed events.
SHORT = ["--prospects", "500", "--replay-seconds", "16", "--bad-rate", "0.03"]
# Lines only Faust, the scorer or the monitor write (they belong in the log files).
WORKER_LOG_MARKS = ("[^Worker]", "[INFO]", "[WARNING]", "faust", "aiokafka")


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
def test_demo_runs_reloads_and_reconciles_on_a_configured_kafka(kafka_broker, tmp_path):
    out = tmp_path / "demo"
    env = _env(CALLSCORE_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers)
    # The local broker's group timings (a configured Kafka keeps the user's own).
    env |= {"CALLSCORE_SESSION_TIMEOUT_SECONDS": "3", "CALLSCORE_HEARTBEAT_INTERVAL_SECONDS": "0.5"}
    result = subprocess.run(
        [*DEMO, *SHORT, "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    terminal = result.stdout + result.stderr
    assert result.returncode == 0, terminal[-4000:]

    summary = json.loads((out / "summary.json").read_text())
    counts = summary["reconciliation"]
    assert counts["reconciles"] is True
    assert counts["produced"] == counts["scored"] + counts["dead_lettered"]
    assert counts["scored"] >= 500 and counts["dead_lettered"] > 0
    assert "reconciles ✓" in result.stdout
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
    for name in ("train", "monitor", "simulate", "recalibrate", "report"):
        assert (logs / f"{name}.log").is_file(), name
    for mark in WORKER_LOG_MARKS:
        assert mark not in terminal, mark

    # Every process it started is gone.
    pids = _pids(out)
    assert {"stream", "monitor", "train", "simulate", "report"} <= set(pids)
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert _group_members_after_a_moment(set(pids.values())) == []


@pytest.mark.slow
def test_ctrl_c_stops_every_process_including_the_embedded_broker(tmp_path):
    out = tmp_path / "demo"
    demo = subprocess.Popen(
        [*DEMO, *SHORT, "--out", str(out)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # Midway through starting up: broker, trainer, scorer and monitor are all running.
        while not {"broker", "train", "stream", "monitor"} <= set(_pids(out)):
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


def _task(event_id: str, priority: str, score: float, version: int = 1) -> bytes:
    return json.dumps(
        {
            "task_id": task_id_for(event_id),
            "event_id": event_id,
            "prospect_id": f"p-{event_id}",
            "score": score,
            "priority": priority,
            "percentile": 50.0,
            "model_version": version,
            "scored_at": "2026-11-26T10:00:00+00:00",
        }
    ).encode()


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
