"""The Kafka clients' log lines: one rate-limited path for every process, so a broker outage
cannot flood the output.

While the broker is away every client logs each failed (re)connection: measured in the scorer,
2,511 lines in 20 s, most from librdkafka; `callscore train` with no broker printed 98 of them
before its one error line. Every confluent-kafka client is given the `librdkafka` logger through
its `logger` setting (`core.kafka.client_config`), so none of its lines goes straight to stderr.
One filter at a time sits on every Kafka client logger (aiokafka's, Faust's transport's and that
one): a token bucket, at most `burst` lines at once, then `per_second`; the first line let through
after a quiet spell says how many were dropped.

- A service (the scorer) keeps seeing its clients' lines, limited (`RateLimitFilter`).
- A command (`callscore.cli.main`) reports broker trouble itself, as one line: its clients'
  connection failures are held back, and the latest is kept so that line can say why
  (`CommandKafkaLogs`); their other lines go through the same kind of bucket.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable

# Loggers whose records go through the one filter (each name and its children).
KAFKA_LOGGERS = ("aiokafka", "faust.transport", "librdkafka")
# The logger given to every confluent-kafka client (its `logger` setting, core.kafka).
LIBRDKAFKA_LOGGER = "librdkafka"
# librdkafka's facility for a failed connection to a broker (refused, TLS, SASL): the client
# retries it, and a command that gives up reports it as BrokerUnavailableError.
CONNECTION_FAILURE_FACILITY = "FAIL"
# A service's Kafka client lines while the broker is away (the scorer and its queue process).
SERVICE_LINES_PER_SECOND = 1.0
SERVICE_BURST = 20
# A command's other Kafka client lines: a few at once, then one a minute.
COMMAND_LINES_PER_SECOND = 1 / 60
COMMAND_BURST = 3

# Around a librdkafka connection failure's reason: the thread and broker it happened on (the
# address is in the command's own line) and the client's connection state.
_FAILURE_NOISE = re.compile(
    r"^(?:\[thrd:[^\]]*\]:\s*)?(?:\S+/(?:bootstrap|\d+):\s*)?|\s*\(after \d+ms in state \w+\)$"
)


def librdkafka_logger() -> logging.Logger:
    return logging.getLogger(LIBRDKAFKA_LOGGER)


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


class CommandKafkaLogs(RateLimitFilter):
    """A command's Kafka client lines: connection failures held back (the latest kept as
    `connection_failure`, for the command's own error line), the rest rate-limited."""

    def __init__(
        self,
        per_second: float = COMMAND_LINES_PER_SECOND,
        burst: int = COMMAND_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(per_second, burst, clock)
        self.connection_failure: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        facility, text = _librdkafka_parts(record)
        if facility == CONNECTION_FAILURE_FACILITY:
            self.connection_failure = _FAILURE_NOISE.sub("", text)
            return False
        return super().filter(record)


def _librdkafka_parts(record: logging.LogRecord) -> tuple[str | None, str]:
    """(facility, text) of a confluent-kafka log record ("%s [%s] %s": facility, client, text);
    (None, message) for any other record."""
    args = record.args
    if record.name == LIBRDKAFKA_LOGGER and isinstance(args, tuple) and len(args) == 3:
        return str(args[0]), str(args[2])
    return None, record.getMessage()


def limit_kafka_logs(
    limiter: RateLimitFilter, prefixes: Iterable[str] = KAFKA_LOGGERS
) -> list[str]:
    """Attach `limiter` to every logger named by `prefixes` or below them that exists now, in
    place of any other RateLimitFilter there (one path: the scorer's replaces the CLI's).

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
        if limiter in logger.filters:
            continue
        for other in [f for f in logger.filters if isinstance(f, RateLimitFilter)]:
            logger.removeFilter(other)
        logger.addFilter(limiter)
        attached.append(name)
    return attached
