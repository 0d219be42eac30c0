"""The demo's child processes: each logs to its own file, is listed in a pid file, and is stopped.

Every child runs in a session of its own, so a Ctrl-C in the terminal reaches the demo only; the
demo then stops them in order (graceful SIGTERM first, SIGKILL of the whole process group after a
grace period), which also takes down anything a child started (a scorer's process pool).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# A Faust worker needs a few seconds to leave its group and flush; beyond this it is killed.
GRACEFUL_STOP_SECONDS = 20.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def last_line(self) -> str:
        """The last non-empty line of its log (what a one-shot command said at the end)."""
        lines = [line for line in self.log_text().splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Children:
    """Starts, lists (in `pid_file`) and stops the demo's processes."""

    def __init__(self, log_dir: Path, pid_file: Path) -> None:
        self.log_dir = log_dir
        self.pid_file = pid_file
        self._children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)
        pid_file.write_text("")

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - closed in stop_all()
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.adopt(name, process, log_path, log)

    def adopt(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        log_path: Path,
        log: IO[bytes] | None = None,
    ) -> Child:
        """Track a process started elsewhere (the broker, a scorer) so it is stopped too."""
        child = Child(name, process, log_path, log)
        self._children.append(child)
        with self.pid_file.open("a") as pids:
            pids.write(f"{name} {process.pid}\n")
        return child

    @property
    def all(self) -> list[Child]:
        return list(self._children)

    def stop(self, children: Sequence[Child], grace: float = GRACEFUL_STOP_SECONDS) -> None:
        """SIGTERM all of them at once, wait up to `grace`, then SIGKILL their process groups."""
        for child in children:
            if child.running:
                _signal(child.process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.0, deadline - time.monotonic()))
        for child in children:
            # Also reaps whatever the child left in its group (e.g. a process pool).
            _kill_group(child.process)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
            if child.log is not None:
                child.log.close()
                child.log = None

    def stop_all(self, last: Sequence[Child] = ()) -> None:
        """Every child, `last` (the broker) after all the others."""
        first = [c for c in self._children if c not in last]
        self.stop(first)
        self.stop(list(last), grace=5.0)


def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
