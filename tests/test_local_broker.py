"""The local brokers: which one a test session uses, and the Apache Kafka launcher itself."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.local_broker import LocalBrokerError, start_kafka, start_tansu, wait_for_port
from core.local_broker import kafka as kafka_launcher
from testkit.brokers import kafka_for_tests


def test_explicit_bootstrap_servers_win(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")
    with kafka_for_tests() as broker:
        assert broker.bootstrap_servers == "kafka.example:9092"
        assert broker.kind == "kafka"
        assert broker.process is None  # not ours to stop


def test_tansu_only_when_asked_for_and_it_is_stopped(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("CALLQUEUE_TEST_BROKER", "tansu")
    with kafka_for_tests() as broker:
        assert broker.kind == "tansu"
        assert broker.client_settings()["session_timeout_seconds"] == 3.0
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


def test_the_session_broker_is_apache_kafka(kafka_broker):
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("CALLQUEUE_TEST_BROKER"):
        pytest.skip("the session's broker was chosen by the environment")
    assert kafka_broker.kind == "kafka"
    assert kafka_broker.origin.startswith(f"Apache Kafka {kafka_launcher.kafka_version()}")
    assert kafka_broker.client_settings()["session_timeout_seconds"] >= 6.0  # Kafka's minimum


def _without(tool: str, monkeypatch, tmp_path) -> None:
    """A PATH on which `tool` is missing (and every jar cache empty)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("java", "mvn"):
        if name != tool and (found := kafka_launcher.shutil.which(name)):
            (bin_dir / name).symlink_to(os.path.realpath(found) if name == "java" else found)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_without_java_one_line_says_what_to_install(monkeypatch, tmp_path):
    _without("java", monkeypatch, tmp_path)
    with pytest.raises(LocalBrokerError, match=r"needs Java 17 .*openjdk-17.*--broker tansu"):
        start_kafka(folder=tmp_path / "k")


def test_without_maven_and_no_cached_jars_one_line_says_what_to_install(monkeypatch, tmp_path):
    _without("mvn", monkeypatch, tmp_path)
    with pytest.raises(LocalBrokerError, match=r"needs Maven .*apt-get install maven"):
        kafka_launcher.fetch_jars()


def test_a_failed_fetch_says_so_in_one_line(monkeypatch, tmp_path):
    """Maven that cannot reach its repository (a stand-in that fails as Maven does offline)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fake = tmp_path / "bin" / "mvn"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho '[ERROR] Failed to execute goal: Could not transfer artifact "
        "org.apache.kafka:kafka_2.13:pom:3.9.1 from/to central'\n"
        'for a; do case "$a" in -DoutputDirectory=*) echo partial > "${a#*=}/x.jar";; esac; done\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    with pytest.raises(LocalBrokerError) as raised:
        kafka_launcher.fetch_jars()
    assert "could not fetch Apache Kafka 3.9.1 from Maven Central (exit 1: [ERROR]" in str(
        raised.value
    )
    assert "\n" not in str(raised.value)
    assert not any((tmp_path / "cache").rglob("*.jar"))  # nothing half-fetched is kept


def test_callscore_broker_without_java_prints_one_line(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")}
    result = subprocess.run(
        [sys.executable, "-m", "callscore.cli", "broker", "--fetch-only"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "needs Java 17" in result.stderr


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch):
    """StorageTool would read it as an option: Kafka's own random-uuid draws again, so do we."""
    import uuid

    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(kafka_launcher.uuid, "uuid4", lambda: next(drawn))
    assert kafka_launcher.new_cluster_id() == "AQEBAQEBAQEBAQEBAQEBAQ"
