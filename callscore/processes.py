"""Child processes of the demo, the test harness and the bench: one wrapper for all three.

A child runs in a session of its own (a Ctrl-C in the terminal reaches its parent only), writes
stdout and stderr to one log file, and is stopped gracefully (SIGTERM) with SIGKILL of its whole
process group after a grace period, which also takes down anything it started (a scorer's
process pool). `Children` starts several, lists them in a pid file and stops them in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from core.settings import Settings

# The console script of the interpreter running us: the same installation as the parent.
CALLSCORE = str(Path(sys.executable).with_name("callscore"))

# A Faust worker needs a few seconds to leave its group and flush; beyond this it is killed.
GRACEFUL_STOP_SECONDS = 20.0
LOG_TAIL_CHARS = 6000


def settings_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment configured by `settings` alone: no other CALLSCORE_* variable leaks in."""
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith("CALLSCORE_")}
    env.update(settings.as_env())
    return env


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes] | None = None

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> Child:
        log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(name, process, log_path, log)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> None:
        """RuntimeError with the log's tail when the process has exited."""
        if not self.running:
            raise RuntimeError(
                f"{self.name} ({self.process.args!r}) exited ({self.process.returncode}):\n"
                f"{self.log_tail()}"
            )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self) -> str:
        return self.log_text()[-LOG_TAIL_CHARS:]

    def last_line(self) -> str:
        """The last non-empty line of its log (what a one-shot command said at the end)."""
        lines = [line for line in self.log_text().splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def kill(self) -> None:
        """SIGKILL its process group at once (a crash, as in the fault tests)."""
        if self.running:
            _kill_group(self.process)
            self.process.wait(10)

    def stop(self, grace: float = GRACEFUL_STOP_SECONDS) -> int | None:
        stop_all([self], grace)
        return self.process.returncode

    def close_log(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None


def stop_all(children: Sequence[Child], grace: float = GRACEFUL_STOP_SECONDS) -> None:
    """SIGTERM all of them at once, wait up to `grace`, then SIGKILL their process groups."""
    for child in children:
        if child.running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(max(0.0, deadline - time.monotonic()))
    for child in children:
        # Also reaps whatever the child left in its group (e.g. a process pool).
        _kill_group(child.process)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(5)
        child.close_log()


class Children:
    """Starts, lists (in `pid_file`) and stops a run's processes."""

    def __init__(self, log_dir: Path, pid_file: Path) -> None:
        self.log_dir = log_dir
        self.pid_file = pid_file
        self._children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)
        pid_file.write_text("")

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> Child:
        child = Child.start(name, argv, self.log_dir / f"{name}.log", env, cwd)
        return self._track(child)

    def adopt(self, name: str, process: subprocess.Popen[bytes], log_path: Path) -> Child:
        """Track a process started elsewhere (the broker) so it is stopped too."""
        return self._track(Child(name, process, log_path))

    def _track(self, child: Child) -> Child:
        self._children.append(child)
        with self.pid_file.open("a") as pids:
            pids.write(f"{child.name} {child.process.pid}\n")
        return child

    @property
    def all(self) -> list[Child]:
        return list(self._children)

    def stop(self, children: Sequence[Child], grace: float = GRACEFUL_STOP_SECONDS) -> None:
        stop_all(children, grace)

    def stop_all(self, last: Sequence[Child] = ()) -> None:
        """Every child, `last` (the broker) after all the others."""
        first = [c for c in self._children if c not in last]
        stop_all(first)
        stop_all(list(last), grace=5.0)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
