"""The broker a test session talks to (never a mock): KAFKA_BOOTSTRAP_SERVERS, testcontainers'
Kafka when a Docker engine answers, else the local Tansu broker."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from core.local_broker import LocalBroker, start_tansu


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def kafka_for_tests() -> Iterator[LocalBroker]:
    """KAFKA_BOOTSTRAP_SERVERS if set; else testcontainers' Kafka if Docker answers; else Tansu."""
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield LocalBroker(servers, None, "KAFKA_BOOTSTRAP_SERVERS")
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield LocalBroker(container.get_bootstrap_server(), None, "testcontainers")
        return
    broker = start_tansu()
    try:
        yield broker
    finally:
        broker.stop()
