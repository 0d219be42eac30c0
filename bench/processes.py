"""A bench module (`python -m bench.<name>`) in its own process, configured like a scorer: only
through CALLSCORE_* variables (callscore.harness.StreamWorker runs `callscore stream` the same
way)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from core.settings import Settings


class ModuleProcess:
    def __init__(
        self, module: str, settings: Settings, log_path: Path, args: tuple[str, ...] = ()
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCORE_")}
        env.update(settings.as_env())
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.process.args!r} exited ({self.process.returncode}):\n{self.log()}"
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()
