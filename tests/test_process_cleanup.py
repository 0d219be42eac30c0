"""A stopped command leaves no process behind: a training's joblib (loky) workers and loky's
resource tracker end with `callscore train` and `callscore schedule` (its retrains;
bench.tools.replay_loop stops it with SIGTERM), stopped as an orchestrator stops a process
(SIGTERM, then SIGKILL after a grace period) or by SIGKILL alone (the OOM killer).

Before (main at 7012122, `callscore train` stopped as soon as its loky workers appeared): SIGTERM
killed the command at once (Python's default disposition) and left both workers, loky's resource
tracker and multiprocessing's, with parent pid 1. An idle orphan exits after joblib's
idle_worker_timeout (300 s) and up to 30 s more; one that was receiving a task when its parent
died was still blocked reading its pipe 400 s later. Now SIGTERM ends the command with status
143 after it ended its workers (callscore.cli.sigterm_exits, trainer.workers.stop_workers), and
every worker exits within a second of its parent's death (trainer.workers.watch_parent).

The command runs in a session of its own: whatever is left in that session after it exited was
started by it (loky neither detaches nor starts a session).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from callscore.processes import CALLSCORE, settings_env
from core.settings import Settings
from testkit.harness import isolated_settings
from trainer.synthetic import synthetic_bank_frame
from trainer.workers import stop_workers, watch_parent

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

WORKER = "joblib.externals.loky.backend.popen_loky_posix"  # a loky worker's command line
START_SECONDS = 120.0  # imports and the data on a loaded machine, until the first workers
EXIT_SECONDS = 60.0
# After the command exited: loky's resource tracker ends once no process holds its pipe, a
# worker within a second of its parent's death.
LEFT_SECONDS = 15.0


def session_processes(session: int) -> dict[int, str]:
    """pid -> command line of the live (not zombie) processes of `session`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        state, _ppid, _group, sid = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(sid) == session and state != "Z":
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def kill_session(session: int) -> None:
    """SIGKILL what is left of a session this test started."""
    for pid in session_processes(session):
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bank_csv(tmp_path: Path) -> Path:
    data = tmp_path / "bank.csv"
    synthetic_bank_frame(rows=2500, seed=11).to_csv(data, sep=";", index=False)
    return data


def start_until_workers_run(
    tmp_path: Path, settings: Settings, argv: list[str]
) -> tuple[subprocess.Popen[bytes], Path]:
    """`callscore ARGV` in a session of its own, returned once its loky workers run."""
    log = tmp_path / "command.log"
    with log.open("wb") as out:
        command = subprocess.Popen(
            [CALLSCORE, *argv],
            env=settings_env(settings),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_SECONDS
    while not any(WORKER in line for line in session_processes(command.pid).values()):
        if command.poll() is not None or time.monotonic() > deadline:
            kill_session(command.pid)
            command.wait()
            pytest.fail(f"no loky worker while it ran:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return command, log


def assert_stops_clean(
    command: subprocess.Popen[bytes], log: Path, stop: signal.Signals, status: int
) -> None:
    """Stopped by `stop`: it exits with `status` and nothing of its session is left."""
    running = session_processes(command.pid)
    try:
        command.send_signal(stop)
        returncode = command.wait(EXIT_SECONDS)
        deadline = time.monotonic() + LEFT_SECONDS
        while (left := session_processes(command.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, (
            f"left {LEFT_SECONDS:.0f} s after the command exited: {left}; "
            f"while it ran: {running}\n{log.read_text()[-3000:]}"
        )
        # SIGTERM: a clean exit after the command ended its workers, not Python's default death.
        assert returncode == status, log.read_text()[-3000:]
    finally:
        kill_session(command.pid)  # on a failure too: never leak 300 MB workers
        command.wait()


@pytest.mark.parametrize(
    ("stop", "status"),
    [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["sigterm", "sigkill"],
)
def test_a_stopped_training_leaves_no_worker(
    tmp_path: Path, stop: signal.Signals, status: int
) -> None:
    """`callscore train` on the base data alone, nothing published: no broker needed."""
    closed = f"127.0.0.1:{closed_port()}"
    settings = isolated_settings("cleanup", tmp_path, bootstrap_servers=closed)
    argv = ["train", "--data", str(bank_csv(tmp_path)), "--out", str(tmp_path / "run")]
    argv += ["--search", "reference", "--no-outcomes", "--no-publish"]
    assert_stops_clean(*start_until_workers_run(tmp_path, settings, argv), stop, status)


def test_the_scheduler_stopped_while_it_retrains_leaves_no_worker(
    tmp_path: Path, kafka_settings: Settings
) -> None:
    """`callscore schedule` as bench.tools.replay_loop runs and stops it (SIGTERM): with no
    served model on its fresh topics, its first decision is a retrain."""
    argv = ["schedule", "--data", str(bank_csv(tmp_path)), "--out", str(tmp_path / "runs")]
    command, log = start_until_workers_run(tmp_path, kafka_settings, argv)
    assert_stops_clean(command, log, signal.SIGTERM, 128 + signal.SIGTERM)


def test_stop_workers_ends_the_workers_of_this_process() -> None:
    """What main does when a command ends: the reusable executor's idle workers go at once."""
    from joblib import Parallel, delayed

    watch_parent()
    pids = set(Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(8)))
    assert pids and os.getpid() not in pids
    stop_workers()
    assert not [pid for pid in pids if alive(pid)]
    stop_workers()  # nothing left to stop: no error
