"""The README's first command, `callscore demo`, end to end and interrupted, in a subprocess.

Synthetic data and no download (tests never use the network). The end-to-end run uses the
session's broker as a "configured Kafka" (topics of its own); the interrupted one starts its
embedded broker, so Ctrl-C must take the broker down too.
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

pytestmark = pytest.mark.slow

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
    assert summary["broker"].startswith(f"Kafka at {kafka_broker.bootstrap_servers}")

    # Midway a recalibration is published and the scorer hot-reloads it.
    assert summary["hot_reloads"] and summary["hot_reloads"][0].startswith("v1 -> v2")
    assert "hot reload: v1 → v2" in result.stdout
    assert any("recalibration of v1" in line for line in summary["published"])

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
    assert _group_members(set(pids.values())) == []


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
    assert _group_members(set(pids.values())) == []
    assert "Traceback" not in output
