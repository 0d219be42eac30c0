"""Rate-limited logging for the Kafka clients, so a broker outage cannot flood the log.

While the broker is away every client logs each failed (re)connection: measured on main before
this, 2,511 lines in 20 s, most from librdkafka. One token bucket is shared by all the Kafka
clients' loggers (aiokafka's, Faust's transport, and the `librdkafka` logger the confluent-kafka
clients are given through their `logger` setting): at most `burst` lines at once, then
`per_second`; the first line let through after a quiet spell says how many were dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

# Loggers whose records go through the shared bucket (each name and its children).
KAFKA_LOGGERS = ("aiokafka", "faust.transport", "librdkafka")
# The logger given to every confluent-kafka client of the scorer (its `logger` setting).
LIBRDKAFKA_LOGGER = "librdkafka"


class RateLimitFilter(logging.Filter):
    """A token bucket over the records of every logger it is attached to (thread-safe)."""

    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._rate = per_second
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()
        self.dropped = 0  # dropped since the last record let through
        self.dropped_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens < 1.0:
                self.dropped += 1
                self.dropped_total += 1
                return False
            self._tokens -= 1.0
            if self.dropped:
                dropped = f"[{self.dropped} Kafka client log lines dropped]"
                record.msg = f"{record.getMessage()} {dropped}"
                record.args = ()
                self.dropped = 0
            return True


def limit_kafka_logs(
    limiter: RateLimitFilter, prefixes: Iterable[str] = KAFKA_LOGGERS
) -> list[str]:
    """Attach `limiter` to every logger named by `prefixes` or below them that exists now.

    A logger's filters apply only to records logged on that very logger (not to its children's
    records passing through it), hence one attachment per logger. Call it again once more modules
    are imported: loggers that already carry it are skipped. Returns the names attached to.
    """
    prefixes = tuple(prefixes)
    names = set(prefixes) | {
        name
        for name in logging.root.manager.loggerDict
        if any(name.startswith(prefix + ".") for prefix in prefixes)
    }
    attached = []
    for name in sorted(names):
        logger = logging.getLogger(name)
        if limiter not in logger.filters:
            logger.addFilter(limiter)
            attached.append(name)
    return attached
