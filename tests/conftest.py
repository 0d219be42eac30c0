"""Shared fixtures. Integration tests talk to a real Kafka-protocol broker over TCP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from core.local_broker import LocalBroker
from core.settings import Settings
from testkit.brokers import kafka_for_tests
from testkit.harness import isolated_settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `kafka` mark follows the fixtures: a test needs a broker iff it uses kafka_broker."""
    for item in items:
        if "kafka_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


# What the session's broker line at the end of the run says (none when no test needed one).
SESSION_BROKER: list[str] = []


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalBroker]:
    """KAFKA_BOOTSTRAP_SERVERS if set; else Apache Kafka from Maven Central's jars (Tansu when
    CALLQUEUE_TEST_BROKER=tansu)."""
    with kafka_for_tests() as broker:
        SESSION_BROKER.append(f"{broker.origin} at {broker.bootstrap_servers}")
        yield broker


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SESSION_BROKER:
        terminalreporter.write_line(f"[kafka] the session's broker: {SESSION_BROKER[0]}")


@pytest.fixture
def unique() -> str:
    """A fresh suffix: every test uses its own topics and consumer groups."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(unique: str, tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    """Settings without a broker: unique topic names, a test signing key, two partitions."""
    return isolated_settings(unique, tmp_path, partitions=2)


@pytest.fixture
def kafka_settings(settings: Settings, kafka_broker: LocalBroker) -> Settings:
    """Settings pointing at the session's real broker, with its kind's client timings."""
    return settings.model_copy(update=kafka_broker.client_settings())


@pytest.fixture
def workers(tmp_path):  # type: ignore[no-untyped-def]
    """Start `callscore stream` subprocesses (or another kind: `callscore api`); every one is
    killed at teardown."""
    from testkit.harness import StreamWorker

    started: list[StreamWorker] = []

    def start(
        settings: Settings, name: str = "w", kind: type[StreamWorker] = StreamWorker
    ) -> StreamWorker:
        worker = kind(settings, tmp_path / f"{name}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()
        worker.stop()


@pytest.fixture
def scorer_and_api(workers):  # type: ignore[no-untyped-def]
    """A ready scorer and a ready `callscore api` on fresh topics serving model v1, started side
    by side: `scorer, api = scorer_and_api(settings)`."""
    from core.kafka import ensure_topics
    from testkit.harness import ApiWorker, publish_model

    def start(settings: Settings):  # type: ignore[no-untyped-def]
        ensure_topics(settings)
        publish_model(settings, version=1)
        scorer = workers(settings, "scorer")
        api = workers(settings, "api", ApiWorker)
        scorer.wait_ready()
        api.wait_ready()
        return scorer, api

    return start
