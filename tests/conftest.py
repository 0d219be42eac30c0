"""Shared fixtures. Integration tests talk to a real Kafka-protocol broker over TCP."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from core.local_broker import LocalBroker
from core.settings import Settings
from testkit.brokers import kafka_for_tests
from testkit.harness import isolated_settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `kafka` mark follows the fixtures: a test needs a broker iff it uses kafka_broker.

    In a pytest-xdist worker, the longest files come first (FIRST, then every other file with a
    `slow` test, then the rest; each file's tests in their order): scripts/test hands out whole
    files in this order, so the long ones start early and short ones fill both workers' ends."""
    for item in items:
        if "kafka_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        slow = {item.path for item in items if item.get_closest_marker("slow")}

        def rank(item: pytest.Item) -> int:
            if item.path.name in FIRST:
                return FIRST.index(item.path.name)
            return len(FIRST) + (item.path not in slow)

        items.sort(key=rank)  # stable: the files' own order otherwise


# The longest files, in the order xdist hands them out: the first to one worker, the second to
# the other, the third to the first, the fourth to the second. The bench and the demos (their
# processes busy on the CPU) thus run one after the other, beside the three-broker cluster
# (mostly waiting for its brokers) and then the broker outage.
FIRST = ["test_bench_smoke.py", "test_cluster_faults.py", "test_demo.py", "test_broker_outage.py"]


# What the session's broker line at the end of the run says (none when no test needed one).
SESSION_BROKER: list[str] = []


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalBroker]:
    """KAFKA_BOOTSTRAP_SERVERS if set; else Apache Kafka from Maven Central's jars (Tansu when
    CALLQUEUE_TEST_BROKER=tansu)."""
    with kafka_for_tests() as broker:
        SESSION_BROKER.append(f"{broker.origin} at {broker.bootstrap_servers}")
        yield broker


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist (scripts/test runs two workers) each worker has a session broker of
    its own: a worker hands its line to the controller, which prints them all."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None and SESSION_BROKER:
        output["session_broker"] = SESSION_BROKER[0]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    line = getattr(node, "workeroutput", {}).get("session_broker")
    if line:
        SESSION_BROKER.append(f"{line} (worker {node.gateway.id})")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in sorted(SESSION_BROKER):
        terminalreporter.write_line(f"[kafka] the session's broker: {line}")


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
