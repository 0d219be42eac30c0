"""A command that cannot reach the broker says so in one line and exits; no client log flood.

Measured before this on a closed port: `callscore train` printed 100 lines (98 librdkafka ones),
`models list` 98, `monitor` 291 and `schedule --once` 98. Every confluent-kafka client now logs
through the one `librdkafka` logger (core.kafka.client_config), and the CLI holds back the
connection failures its commands report themselves (core.kafka_logs.CommandKafkaLogs).

`monitor` is not kept running without a broker: it creates its topics at start and ends on a
broker error (a restart re-reads every topic), so like the others it exits with the one line.
"""

from __future__ import annotations

import logging
import socket
import subprocess
from pathlib import Path

import pytest

from callscore.cli import error_line
from callscore.processes import CALLSCORE, settings_env
from core.errors import BrokerUnavailableError, CallscoreError
from core.kafka import client_config
from core.kafka_logs import (
    LIBRDKAFKA_LOGGER,
    CommandKafkaLogs,
    RateLimitFilter,
    limit_kafka_logs,
)
from core.settings import Settings
from testkit.harness import isolated_settings
from trainer.synthetic import synthetic_bank_frame

MAX_LINES = 3
# Start-up (imports) plus the longest broker wait (ensure_topics: 15 s) on a loaded machine.
COMMAND_TIMEOUT_SECONDS = 120.0

REFUSED = (
    "[thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: "
    "Connection refused (after 0ms in state CONNECT)"
)


def librdkafka_record(facility: str, text: str, level: int = logging.ERROR) -> logging.LogRecord:
    """A record as confluent-kafka logs it: "%s [%s] %s" with facility, client name, text."""
    args = (facility, "rdkafka#consumer-1", text)
    return logging.LogRecord(LIBRDKAFKA_LOGGER, level, "", 0, "%s [%s] %s", args, None)


def test_every_client_config_names_the_one_librdkafka_logger(settings: Settings) -> None:
    assert client_config(settings)["logger"] is logging.getLogger(LIBRDKAFKA_LOGGER)


def test_connection_failures_are_held_back_and_the_latest_kept_as_the_reason() -> None:
    logs = CommandKafkaLogs()
    assert not any(logs.filter(librdkafka_record("FAIL", REFUSED)) for _ in range(100))
    assert logs.connection_failure == "Connect to ipv4#127.0.0.1:9 failed: Connection refused"
    line = error_line(BrokerUnavailableError("Kafka at 127.0.0.1:9 did not answer"), logs)
    assert line == (
        "callscore: error: Kafka at 127.0.0.1:9 did not answer "
        "[Kafka client: Connect to ipv4#127.0.0.1:9 failed: Connection refused]"
    )
    # Not broker trouble: no client reason attached.
    assert error_line(CallscoreError("--date: bad"), logs) == "callscore: error: --date: bad"


def test_a_commands_other_client_lines_are_limited_to_a_few() -> None:
    logs = CommandKafkaLogs(per_second=0.0, burst=3)
    warning = librdkafka_record("CONFWARN", "a configuration warning", logging.WARNING)
    passed = sum(logs.filter(warning) for _ in range(50))
    assert passed == 3 and logs.dropped_total == 47 and logs.connection_failure is None


def test_one_limit_at_a_time_on_the_kafka_loggers() -> None:
    command, service = CommandKafkaLogs(), RateLimitFilter(per_second=1.0, burst=20)
    attached = limit_kafka_logs(command)
    try:
        assert LIBRDKAFKA_LOGGER in limit_kafka_logs(service)  # the scorer's replaces the CLI's
        filters = logging.getLogger(LIBRDKAFKA_LOGGER).filters
        assert service in filters and command not in filters
    finally:
        for name in attached:
            logging.getLogger(name).removeFilter(service)


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_commands_without_a_broker_print_one_line_naming_it(tmp_path: Path) -> None:
    address = f"127.0.0.1:{closed_port()}"
    settings = isolated_settings("quiet", tmp_path, bootstrap_servers=address)
    data = tmp_path / "bank.csv"
    synthetic_bank_frame(rows=600).to_csv(data, sep=";", index=False)
    bank = ["--data", str(data)]
    commands = {
        # Outcomes are read and the model topic too: the broker is asked before any training.
        "train": ["train", *bank, "--out", str(tmp_path / "run"), "--search", "reference"],
        "models list": ["models", "list"],
        "export": ["export", "--date", "2024-05-01", "--to", str(tmp_path / "lake")],
        "monitor": ["monitor"],
        "schedule --once": ["schedule", "--once", *bank, "--out", str(tmp_path / "runs")],
        "queue top": ["queue", "top"],
    }
    env = settings_env(settings)
    # All at once: each mostly waits for its broker timeout.
    running = {
        name: subprocess.Popen(
            [CALLSCORE, *argv],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, argv in commands.items()
    }
    outputs = {}
    try:
        for name, process in running.items():
            output, _ = process.communicate(timeout=COMMAND_TIMEOUT_SECONDS)
            outputs[name] = (process.returncode, output)
    finally:
        for process in running.values():
            process.kill()
            process.wait()
    for name, (returncode, output) in outputs.items():
        lines = output.splitlines()
        assert returncode != 0, f"{name} exited 0:\n{output}"
        assert len(lines) <= MAX_LINES, f"{name} printed {len(lines)} lines:\n{output}"
        assert address in output, f"{name} does not name {address}:\n{output}"
        assert "CALLSCORE_BOOTSTRAP_SERVERS" in output, f"{name} does not say what to do:\n{output}"
        assert "Traceback" not in output and "%3|" not in output, output
