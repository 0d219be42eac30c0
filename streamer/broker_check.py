"""Whether the broker answers: /readyz's `broker_reachable`, gauge callscore_broker_reachable.

A daemon thread asks the broker for the metadata of the prospects topic every
Settings.broker_check_seconds, with that same timeout, on a confluent-kafka AdminClient of its own
(one small request per check; Faust's aiokafka clients expose no dependable connection state, and
the model watcher's reader may sit idle for long). Its client reconnects within
broker_check_seconds, so:
- an outage is reported at most 2 x broker_check_seconds after it starts (the next check, plus
  that check's timeout), 1 s to 2 s with the default;
- the broker's return is reported at most 2 x broker_check_seconds after it is back.
Only changes are logged (one line each way); the client's own logs go to the rate-limited
`librdkafka` logger, like every client's (core.kafka.client_config, core/kafka_logs.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from core.kafka import client_config
from core.settings import Settings
from streamer.metrics import StreamMetrics

log = logging.getLogger(__name__)


class BrokerCheck:
    def __init__(self, settings: Settings, metrics: StreamMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reachable = False  # until the first answer
        self.last_error: str | None = None
        self._down_since: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="broker-check", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _client(self) -> Any:
        from confluent_kafka.admin import AdminClient

        interval_ms = max(int(self._settings.broker_check_seconds * 1000), 1)
        return AdminClient(
            client_config(self._settings)
            | {
                "reconnect.backoff.ms": min(100, interval_ms),
                "reconnect.backoff.max.ms": interval_ms,
            }
        )

    def _run(self) -> None:
        from confluent_kafka import KafkaException

        client = self._client()
        interval = self._settings.broker_check_seconds
        topic = self._settings.topic_prospects
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                client.list_topics(topic, timeout=interval)
            except KafkaException as exc:
                self.record(False, str(exc.args[0]))
            except Exception as exc:  # never let the thread die silently
                self.record(False, f"{type(exc).__name__}: {exc}")
            else:
                self.record(True, None)
            client.poll(0)  # hands the client's queued log lines to the logger
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def record(self, reachable: bool, error: str | None) -> None:
        """One check's result: flips the state and the gauge, logs only changes."""
        now = time.monotonic()
        if reachable and not self.reachable:
            if self._down_since is not None:
                log.info("broker reachable again after %.1f s", now - self._down_since)
            self._down_since = None
        elif not reachable and (self.reachable or self._down_since is None):
            self._down_since = now
            log.warning(
                "broker unreachable (%s): not ready; batches retry for up to %.0f s",
                error,
                self._settings.broker_retry_seconds,
            )
        self.reachable = reachable
        self.last_error = error
        self._metrics.broker_reachable.set(1 if reachable else 0)
