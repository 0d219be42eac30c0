"""The queue mirror: one process's copy of the whole call queue, read from the compacted topic.

`GET /queue` answers the best open tasks of the whole deployment. Two ways to get them:

- scatter-gather: ask every scorer replica for the best N of its partitions and merge. The
  replicas' entries are the writers' state, but the answer then needs the list of replicas,
  every one of them answering (one slow or rebalancing replica delays or truncates every
  answer), and an HTTP fan-out from inside the stream's event loop; and a process that does not
  score (issue 17's `callscore api`) could not answer at all;
- a mirror (this): read the `call-queue` topic from its beginning, all partitions, and keep the
  newest record per key (`callqueue.view.QueueView`). It is exactly what a dialer mirroring the
  topic sees, it needs nothing but Kafka, it answers whatever the scorers are doing (restarts,
  rebalances, none running), and any number of processes can run one. It lags the scorers by
  the topic's end-to-end latency, and it holds the queue in memory (about 500 bytes an open
  task; reading 1,000,000 records takes about 13 s of parsing).

So the mirror, a self-contained class: the scorer runs one for now (`queue_mirror_service`,
next to its model watcher) and an API process of its own can run the same class unchanged.

Like the model watcher, it is a daemon thread with a `core.topic_reader.TopicReader` (fresh
group id, manual assignment from the beginning, no commits, EOF rather than watermarks). Until
the reader reached the end of every partition once, `view()` is None: a half-read queue would
answer tasks that were withdrawn since.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import mode

from callqueue.view import QueueView
from core.errors import CallscoreError
from core.settings import Settings
from core.topic_reader import TopicReader

log = logging.getLogger(__name__)


class QueueMirror:
    def __init__(self, settings: Settings, poll_seconds: float = 0.25) -> None:
        self._settings = settings
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._view = QueueView()
        self.caught_up = threading.Event()
        self.last_error: str | None = None

    def view(self) -> QueueView | None:
        """The queue as read so far, once every partition was read to its end; else None."""
        return self._view if self.caught_up.is_set() else None

    # --- lifecycle ---
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="queue-mirror", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        reader: TopicReader | None = None
        while not self._stop.is_set():
            try:
                if reader is None:
                    reader = TopicReader(
                        self._settings, [self._settings.topic_queue], "callscore-queue-mirror"
                    )
                self._step(reader)
                if self.last_error is not None:
                    log.info("queue mirror: reading again")
                self.last_error = None
            except CallscoreError as exc:  # broker trouble: keep answering what was read
                if self.last_error is None:
                    log.warning("queue mirror: %s; retrying every second", exc)
                self.last_error = str(exc)
                self._stop.wait(1.0)
            except Exception as exc:  # never let the thread die silently
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("queue mirror failed; retrying")
                self._stop.wait(1.0)
        if reader is not None:
            reader.close()

    def _step(self, reader: TopicReader) -> None:
        unreadable = self._view.unreadable
        for record in reader.poll(self._poll_seconds):
            self._view.apply(record.key, record.value, record.headers)
        if self._view.unreadable > unreadable:
            log.warning(
                "queue mirror: %d records of %s are not call tasks for their key (ignored)",
                self._view.unreadable - unreadable,
                self._settings.topic_queue,
            )
        if reader.at_end and not self.caught_up.is_set():
            counts = self._view.open_by_tier()
            log.info(
                "queue mirror: read %s to the end: %d records, %d open tasks",
                self._settings.topic_queue,
                self._view.records_applied,
                sum(counts.values()),
            )
            self.caught_up.set()


def queue_mirror_service(mirror: QueueMirror) -> type[mode.Service]:
    class QueueMirrorService(mode.Service):
        """Runs the mirror's thread for as long as the process runs."""

        async def on_start(self) -> None:
            mirror.start()

        async def on_stop(self) -> None:
            await asyncio.get_running_loop().run_in_executor(None, mirror.stop)

    return QueueMirrorService
