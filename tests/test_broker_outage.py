"""Broker outage: a TCP proxy between every client and the broker is cut for 20 s mid-stream.

The broker advertises the proxy's address, so after bootstrapping every client (the worker's
Faust consumer and producer, its model reader and broker check, this test's producer) still goes
through the proxy; cutting it is a broker outage that keeps the broker's data, which restarting
the in-memory broker would not. The worker must say it is not ready during the outage, log a
bounded number of lines, and score every event afterwards without a restart.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.kafka import ensure_topics, producer_config
from core.local_broker import LocalBroker, free_port, start_tansu
from testkit.factories import valid_event
from testkit.harness import collect, event_bytes, isolated_settings, publish_model, worker_settings

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 20.0
EVENTS = 1500
EVENTS_PER_SECOND = 50
MAX_LOG_LINES_DURING_OUTAGE = 100


class TcpProxy:
    """Forwards 127.0.0.1:port to 127.0.0.1:target. `cut()` closes the listener and every
    connection (clients then get ECONNREFUSED, as from a dead broker); `restore()` listens
    again on the same port."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._close(self._listener)
                self._listener = None
            for sock in self._sockets:
                self._close(sock)
            self._sockets.clear()

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                self._close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    self._close(client)
                    self._close(upstream)
                    return
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            for sock in (source, sink):
                if sock in self._sockets:
                    self._sockets.discard(sock)
                    self._close(sock)


@pytest.fixture
def proxied_broker() -> Iterator[tuple[TcpProxy, LocalBroker]]:
    """A broker of its own (it must advertise the proxy), reachable only through the proxy."""
    proxy = TcpProxy(free_port(), free_port())
    proxy.restore()
    broker = start_tansu(proxy.target, advertised_url=f"tcp://127.0.0.1:{proxy.port}")
    try:
        yield proxy, broker
    finally:
        proxy.cut()
        broker.stop()


def line_count(path: Path) -> int:
    return len(path.read_bytes().splitlines())


def test_twenty_second_broker_outage_loses_nothing_and_needs_no_restart(
    proxied_broker, unique, tmp_path, workers
):
    from confluent_kafka import Producer

    proxy, _broker = proxied_broker
    base = isolated_settings(
        unique, tmp_path, partitions=2, bootstrap_servers=f"127.0.0.1:{proxy.port}"
    )
    settings = worker_settings(
        base, tmp_path, batch_max_size=20, broker_retry_seconds=60.0, broker_check_seconds=0.5
    )
    ensure_topics(settings)
    publish_model(settings, version=1)
    worker = workers(settings, "outage")
    worker.wait_ready(60)
    pid = worker.process.pid
    assert worker.metric("callscore_broker_reachable") == 1

    # Each event newer than its prospect's last one: every event opens a task.
    start = datetime(2026, 11, 26, tzinfo=UTC)
    events = [
        valid_event(
            event_id=f"o-{i}",
            prospect_id=f"p-{i % 89}",
            occurred_at=(start + timedelta(seconds=i)).isoformat(),
        )
        for i in range(EVENTS)
    ]
    # The producer buffers what it cannot deliver during the outage and sends it afterwards.
    producer = Producer(
        producer_config(settings, **{"message.timeout.ms": 120_000, "log_level": 0})
    )

    def produce_steadily() -> None:
        for start in range(0, EVENTS, EVENTS_PER_SECOND // 10):
            for event in events[start : start + EVENTS_PER_SECOND // 10]:
                key, value = event_bytes(event)
                producer.produce(settings.topic_prospects, key=key, value=value)
            producer.poll(0)
            time.sleep(0.1)

    feeder = threading.Thread(target=produce_steadily, daemon=True)
    feeder.start()
    worker.wait_until(
        lambda: worker.metric("callscore_events_scored_total") >= 100, 30, "scoring before the cut"
    )

    timeline: dict[str, float] = {}
    t0 = time.monotonic()
    lines_before = line_count(worker.log_path)
    proxy.cut()
    statuses: list[tuple[float, int]] = []
    while (elapsed := time.monotonic() - t0) < OUTAGE_SECONDS:
        status = worker.http("GET", "/readyz").status
        statuses.append((elapsed, status))
        if status == 503 and "readyz_503" not in timeline:
            timeline["readyz_503"] = elapsed
            assert worker.metric("callscore_broker_reachable") == 0
        time.sleep(0.25)
    lines_during = line_count(worker.log_path) - lines_before
    scored_at_restore = worker.metric("callscore_events_scored_total")
    proxy.restore()
    timeline["restored"] = time.monotonic() - t0

    worker.wait_until(
        lambda: worker.metric("callscore_events_scored_total") > scored_at_restore,
        60,
        "scoring resumed",
    )
    timeline["scoring_resumed"] = time.monotonic() - t0
    worker.wait_ready(60)
    timeline["readyz_200"] = time.monotonic() - t0
    feeder.join(60)
    assert producer.flush(60) == 0, "events not acknowledged by the broker"

    wanted = {e["event_id"] for e in events}
    tasks = collect(
        settings,
        settings.task_topics.values(),
        lambda r: {t.json()["event_id"] for t in r} >= wanted,
        timeout=60,
    )
    timeline["all_scored"] = time.monotonic() - t0
    print(f"\n[outage] timeline (s after the cut): {timeline}; log lines during it: {lines_during}")

    assert worker.process.poll() is None and worker.process.pid == pid, worker.log()
    assert {t.json()["event_id"] for t in tasks} >= wanted  # every event scored, once or more
    by_event: dict[str, set[str]] = {}
    for task in tasks:
        by_event.setdefault(task.json()["event_id"], set()).add(task.json()["task_id"])
    assert all(len(ids) == 1 for ids in by_event.values())  # repeats keep their task id
    assert "readyz_503" in timeline, f"/readyz never went 503 during the outage: {statuses}"
    assert timeline["readyz_503"] < 5.0, statuses  # detected within a few seconds
    assert all(status == 503 for elapsed, status in statuses if elapsed > 5.0), statuses
    assert worker.metric("callscore_broker_reachable") == 1
    assert lines_during < MAX_LOG_LINES_DURING_OUTAGE, worker.log()
