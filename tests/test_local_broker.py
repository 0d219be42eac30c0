"""The broker choice for tests: KAFKA_BOOTSTRAP_SERVERS, else testcontainers, else Tansu."""

from __future__ import annotations

import pytest

from core.local_broker import start_tansu, wait_for_port
from testkit import brokers
from testkit.brokers import kafka_for_tests


def test_explicit_bootstrap_servers_win(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")
    with kafka_for_tests() as broker:
        assert broker.bootstrap_servers == "kafka.example:9092"
        assert broker.process is None  # not ours to stop


def test_without_docker_a_tansu_broker_is_started_and_stopped(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setattr(brokers, "_docker_answers", lambda: False)
    with kafka_for_tests() as broker:
        assert broker.origin == "tansu"
        host, port = broker.bootstrap_servers.split(":")
        wait_for_port(host, int(port), timeout=1)
        process = broker.process
    assert process is not None and process.poll() is not None


def test_stopping_a_stopped_broker_is_harmless():
    broker = start_tansu()
    broker.stop()
    broker.stop()
    with pytest.raises(TimeoutError):
        host, port = broker.bootstrap_servers.split(":")
        wait_for_port(host, int(port), timeout=0.3)
