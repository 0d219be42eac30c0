"""Following topics from their beginning in a daemon thread, for as long as the process runs.

Every scorer replica's model watcher and queue mirror must see every record of their topic,
whatever partitions the replica owns, so neither is a consumer-group member: each runs a
`TopicReader` (fresh group id, manual assignment from the beginning, no commits, EOF rather than
watermarks) in a thread of its own. Broker trouble never ends the thread: it is logged once per
spell (not once per retry, about one a second), the reader is kept, and reading resumes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from core.errors import CallscoreError
from core.settings import Settings
from core.topic_reader import Record, TopicReader

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


class TopicFollower:
    """Subclasses say what a poll's records mean in `handle(records, at_end)`."""

    def __init__(
        self,
        settings: Settings,
        topics: list[str],
        name: str,
        group_prefix: str,
        poll_seconds: float = 0.25,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._name = name
        self._group_prefix = group_prefix
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def handle(self, records: list[Record], at_end: bool) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
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
                    # It polls every poll_seconds anyway: a fetch may wait as long. The
                    # stream's short fetch wait (Settings.fetch_max_wait_ms, 10 ms in the
                    # tests and the bench) made each idle follower cost the broker ~100
                    # empty fetches a second (an idle scorer: broker 30% of a core).
                    wait_ms = int(self._poll_seconds * 1000)
                    overrides: dict[str, Any] = {"fetch.wait.max.ms": wait_ms}
                    reader = TopicReader(
                        self._settings, self._topics, self._group_prefix, **overrides
                    )
                self.handle(reader.poll(self._poll_seconds), reader.at_end)
                if self.last_error is not None:
                    log.info("%s: reading again", self._name)
                self.last_error = None
            except CallscoreError as exc:  # broker trouble: keep what was read, retry
                if self.last_error is None:
                    log.warning("%s: %s; retrying every second", self._name, exc)
                self.last_error = str(exc)
                self._stop.wait(RETRY_SECONDS)
            except Exception as exc:  # never let the thread die silently
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("%s failed; retrying", self._name)
                self._stop.wait(RETRY_SECONDS)
        if reader is not None:
            reader.close()
