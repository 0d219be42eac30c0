"""The call queue's worker in a child process of the scorer.

Why a process: as a thread beside Faust, the queue worker shared the scorer's interpreter lock;
each event cost it about 140 us of decoding and rules in Python, the Faust agent's batches
shrank and the scorer with the queue ran at 0.64x the events/s of the scorer without it
(bench/README.md, Call queue). In its own process it uses the machine's other core.

The parent (`QueueProcess`, started by `callscore stream` before the Faust worker, stopped by a
service of it) starts the child with spawn (the
scorer has threads a fork would copy mid-operation), reads its reports on a pipe and keeps the
scorer's metrics and readiness from them (`QueueProgress`). Lifetimes are tied both ways:
- the child stops when the scorer asks, or when the pipe closes because the scorer died (even by
  SIGKILL): it closes its consumer, so its partitions move to another replica at once;
- the scorer stops when the child reports that it gave up (a batch not acknowledged within the
  retry budget) or exits unasked: `failure` is set and the scorer's service crashes the worker.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from core.kafka_logs import (
    SERVICE_BURST,
    SERVICE_LINES_PER_SECOND,
    RateLimitFilter,
    limit_kafka_logs,
)
from core.settings import Settings
from streamer.metrics import StreamMetrics
from streamer.queue_worker import QueueProgress, QueueWorker

log = logging.getLogger(__name__)

STOP = "stop"  # the parent's one message
PARENT_POLL_SECONDS = 0.5
STOP_SECONDS = 15.0  # a batch being published finishes within this, else the child is killed
LOG_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s] [call-queue] %(message)s"


@dataclass(frozen=True)
class QueueFailure:
    """The child's last report when its worker gave up."""

    message: str


class QueueProcess:
    """The scorer's handle on the queue's child process; the same lifecycle as a thread."""

    def __init__(self, settings: Settings, metrics: StreamMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._process: Any = None  # multiprocessing's SpawnProcess
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._stopping = False
        self.failure: BaseException | None = None  # set when the queue gave up or died
        self.assigned = threading.Event()  # set once it owns its partitions (possibly none)

    def start(self, level: int = logging.INFO) -> None:
        """Start the child (its log lines at `level` and above), before the Faust worker: its
        imports, its group join and its partitions' recovery then overlap the worker's start
        (about 4.8 s of a scorer's 12.3 s start here when it came after)."""
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(
            target=run_child, args=(self._settings, child, level), name="call-queue", daemon=True
        )
        self._process.start()
        child.close()  # the child holds its end: it sees EOF when this process dies
        self._conn = parent
        self._reader = threading.Thread(target=self._read, name="call-queue-reports", daemon=True)
        self._reader.start()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        self._stopping = True
        if self._process is None:
            return
        try:
            assert self._conn is not None
            self._conn.send(STOP)
        except (OSError, ValueError):  # the child is gone already
            pass
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("the call queue's process did not stop within %.0f s: killed", timeout)
            self._process.kill()
            self._process.join()
        if self._reader is not None:
            self._reader.join(timeout)

    def _read(self) -> None:
        assert self._conn is not None
        while True:
            try:
                report = self._conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(report, QueueFailure):
                self.failure = RuntimeError(report.message)
            else:
                self._metrics.record_queue(report)
                if report.assigned:
                    self.assigned.set()
        self._process.join()
        if self.failure is None and not self._stopping:
            self.failure = RuntimeError(
                f"the call queue's process exited unasked (code {self._process.exitcode})"
            )


def run_child(settings: Settings, conn: Connection, level: int) -> None:
    """The child's main: the worker's thread runs until the parent asks or goes away."""
    # The scorer decides when this process stops: a Ctrl-C to the terminal's process group or
    # a SIGTERM meant for the scorer must not cut a batch short here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    log.info("call queue: process %d started (scorer %d)", os.getpid(), os.getppid())
    limiter = RateLimitFilter(SERVICE_LINES_PER_SECOND, SERVICE_BURST)
    limit_kafka_logs(limiter)
    lock = threading.Lock()  # the worker's thread and this one both send

    def report(progress: QueueProgress | QueueFailure) -> None:
        with lock:
            conn.send(progress)

    worker = QueueWorker(settings, report)
    worker.start()
    try:
        while worker.failure is None and worker.running:
            if conn.poll(PARENT_POLL_SECONDS):
                conn.recv()  # STOP; EOFError when the parent died
                break
    except (EOFError, OSError):
        log.warning("the scorer is gone: the call queue stops")
    worker.stop(STOP_SECONDS)
    if worker.failure is not None:
        with contextlib.suppress(OSError):
            report(QueueFailure(f"{type(worker.failure).__name__}: {worker.failure}"))
        sys.exit(1)
