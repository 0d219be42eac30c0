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

So the mirror, a self-contained class: the scorer runs one for now (streamer/app.py, next
to its model watcher) and an API process of its own can run the same class unchanged.

Like the model watcher, it is a `core.topic_follower.TopicFollower`: a daemon thread with a
TopicReader (fresh group id, manual assignment from the beginning, no commits, EOF rather than
watermarks). Until
the reader reached the end of every partition once, `view()` is None: a half-read queue would
answer tasks that were withdrawn since.
"""

from __future__ import annotations

import logging
import threading

from callqueue.view import QueueView
from core.settings import Settings
from core.topic_follower import TopicFollower
from core.topic_reader import Record

log = logging.getLogger(__name__)


class QueueMirror(TopicFollower):
    def __init__(self, settings: Settings, poll_seconds: float = 0.25) -> None:
        super().__init__(
            settings, [settings.topic_queue], "queue mirror", "callscore-queue-mirror", poll_seconds
        )
        self._view = QueueView()
        self.caught_up = threading.Event()

    def view(self) -> QueueView | None:
        """The queue as read so far, once every partition was read to its end; else None."""
        return self._view if self.caught_up.is_set() else None

    def handle(self, records: list[Record], at_end: bool) -> None:
        unreadable = self._view.unreadable
        for record in records:
            self._view.apply(record.key, record.value, record.headers)
        if self._view.unreadable > unreadable:
            log.warning(
                "queue mirror: %d records of %s are not call tasks for their key (ignored)",
                self._view.unreadable - unreadable,
                self._settings.topic_queue,
            )
        if at_end and not self.caught_up.is_set():
            counts = self._view.open_by_tier()
            log.info(
                "queue mirror: read %s to the end: %d records, %d open tasks",
                self._settings.topic_queue,
                self._view.records_applied,
                sum(counts.values()),
            )
            self.caught_up.set()
