"""Process resources from /proc (Linux): CPU seconds, peak resident memory, child processes."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included, its children not); 0 once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: fields are counted after its closing ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM, the process's peak resident set, in MiB (None once the process is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def children(pid: int) -> list[int]:
    """Every descendant of pid (e.g. the /score pool's processes of a worker)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            pending.extend(kids)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of pid and its live descendants."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children(pid))


def tree_peak_rss_mb(pid: int) -> float | None:
    """The peaks of pid and its live descendants (the queue's process, /score's), summed: an
    upper bound of their peak together."""
    peaks = [peak_rss_mb(p) for p in [pid, *children(pid)]]
    return round(sum(p for p in peaks if p is not None), 1) if peaks[0] is not None else None


@dataclass
class CpuWindow:
    """CPU seconds that processes spent between start() and stop(), by name: one process and
    its descendants, or several summed (a Kafka cluster's nodes, each a JVM)."""

    pids: Mapping[str, int | Sequence[int]]
    started: dict[str, float] | None = None
    spent: dict[str, float] | None = None

    def _now(self) -> dict[str, float]:
        return {
            name: sum(tree_cpu_seconds(pid) for pid in ([ids] if isinstance(ids, int) else ids))
            for name, ids in self.pids.items()
        }

    def start(self) -> None:
        self.started = self._now()

    def stop(self) -> dict[str, float]:
        assert self.started is not None, "CpuWindow.stop() before start()"
        started = self.started
        self.spent = {name: round(s - started[name], 3) for name, s in self._now().items()}
        return self.spent


def per_10k(seconds: float, events: int) -> float | None:
    return round(seconds * 10_000 / events, 3) if events > 0 else None
