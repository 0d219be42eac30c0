"""What every local broker shares: the handle a caller stops, free ports, waiting for a port."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Literal

# "kafka": Apache Kafka (ours or KAFKA_BOOTSTRAP_SERVERS'); "tansu": the embedded fallback.
BrokerKind = Literal["kafka", "tansu"]

# Client settings for a local broker, per kind (docs/local-broker.md has the measurements).
# Tansu holds a JoinGroup for half the session timeout and re-checks an empty fetch only after
# half the fetch wait: a short session and a 10 ms fetch wait. Kafka answers a fetch as soon as
# data arrives and refuses a session below its group.min.session.timeout.ms (6 s); a short
# heartbeat makes members notice a rebalance quickly on both.
BROKER_TIMINGS: dict[BrokerKind, dict[str, Any]] = {
    "tansu": {
        "session_timeout_seconds": 3.0,
        "heartbeat_interval_seconds": 0.5,
        "fetch_max_wait_ms": 10,
    },
    "kafka": {
        "session_timeout_seconds": 6.0,
        "heartbeat_interval_seconds": 0.5,
        "fetch_max_wait_ms": 100,
    },
}


def stop_process(process: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM, then SIGKILL after the grace period; harmless on a process that has ended."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass
class LocalBroker:
    """A broker (or cluster) the caller talks to; `processes` are ours to stop, none when the
    broker was given (KAFKA_BOOTSTRAP_SERVERS)."""

    bootstrap_servers: str
    kind: BrokerKind
    origin: str  # what the session's broker line says: "Apache Kafka 3.9.1 (1 node)", "tansu"…
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    grace_seconds: float = 5.0

    def client_settings(self) -> dict[str, Any]:
        """Settings updates for a client of this broker: its address and its kind's timings."""
        return {"bootstrap_servers": self.bootstrap_servers, **BROKER_TIMINGS[self.kind]}

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.processes[0] if self.processes else None

    def stop(self) -> None:
        """SIGTERM to every process at once (a cluster's nodes shut down together, none waits
        for a quorum the others already left), SIGKILL to those still running after the grace."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + self.grace_seconds
        for process in self.processes:
            stop_process(process, max(0.1, deadline - time.monotonic()))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_answers(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")
        time.sleep(0.02)
