"""Shared fixtures. Integration tests talk to a real Kafka-protocol broker over TCP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from callscore.local_broker import LocalBroker, kafka_for_tests
from callscore.settings import Settings

TEST_SIGNING_KEY = "test-signing-key-not-secret"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalBroker]:
    """KAFKA_BOOTSTRAP_SERVERS if set; else testcontainers' Kafka if Docker answers; else Tansu."""
    with kafka_for_tests() as broker:
        print(f"\n[kafka] using {broker.origin} at {broker.bootstrap_servers}")
        yield broker


@pytest.fixture
def unique() -> str:
    """A fresh suffix: every test uses its own topics and consumer groups."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(unique: str, tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    """Settings without a broker: unique topic names, test signing key."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        topic_prospects=f"prospects-{unique}",
        topic_tasks_prefix=f"call-tasks-{unique}",
        topic_dead_letters=f"dead-letters-{unique}",
        topic_models=f"models-{unique}",
        topic_outcomes=f"outcomes-{unique}",
        partitions=2,
        model_signing_key=TEST_SIGNING_KEY,
        artifact_dir=tmp_path / "artifacts",
        session_timeout_seconds=3,
        heartbeat_interval_seconds=0.5,
        fetch_max_wait_ms=10,
    )


@pytest.fixture
def kafka_settings(settings: Settings, kafka_broker: LocalBroker) -> Settings:
    """Settings pointing at the session's real broker, with the fast group timings."""
    return settings.model_copy(update={"bootstrap_servers": kafka_broker.bootstrap_servers})


@pytest.fixture
def workers(tmp_path):  # type: ignore[no-untyped-def]
    """Start `callscore stream` subprocesses; every one is killed at teardown."""
    from tests.stream_harness import StreamWorker

    started: list[StreamWorker] = []

    def start(settings: Settings, name: str = "w") -> StreamWorker:
        worker = StreamWorker(settings, tmp_path / f"{name}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()
        worker.stop()
