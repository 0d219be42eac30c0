"""Settings validation, the `callscore` CLI and topic creation on the real broker."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from callscore.cli import build_parser, main
from core.errors import MissingSecretError
from core.kafka import client_config, ensure_topics, faust_broker_kwargs, topic_specs
from core.settings import Settings


def subcommand_paths(parser=None, prefix=()):  # type: ignore[no-untyped-def]
    """Every (sub)command path of the CLI, e.g. ('schemas', 'export')."""
    import argparse

    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*prefix, name)
                yield from subcommand_paths(child, (*prefix, name))


def test_env_prefix_and_topic_names(monkeypatch):
    monkeypatch.setenv("CALLSCORE_TOPIC_TASKS_PREFIX", "tasks")
    monkeypatch.setenv("CALLSCORE_BATCH_MAX_SIZE", "200")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.task_topics == {
        "high": "tasks.high",
        "medium": "tasks.medium",
        "low": "tasks.low",
    }
    assert settings.batch_max_size == 200
    names = [spec.name for spec in topic_specs(settings)]
    assert len(names) == len(set(names)) == 13


def test_settings_round_trip_through_the_environment(settings, monkeypatch):
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None) == settings  # type: ignore[call-arg]


def test_production_defaults_stay_sane():
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.session_timeout_seconds >= 10
    assert settings.max_message_bytes == 64 * 1024
    assert settings.api_token is None and settings.model_signing_key_file is None
    assert settings.model_trusted_keys is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"heartbeat_interval_seconds": 5, "session_timeout_seconds": 3},
        {"tier_high_fraction": 0.6, "tier_medium_fraction": 0.5},
        {"security_protocol": "SASL_SSL"},
        {"partitions": 0},
        {"min_insync_replicas": 2},  # above the replication factor: every write refused
        {"replication_factor": 3, "min_insync_replicas": 0},
        {"tombstone_retention_days": 0.5},
    ],
)
def test_inconsistent_settings_are_refused(overrides):
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def test_security_settings_reach_every_client_and_secrets_stay_hidden(tmp_path):
    ca = tmp_path / "ca.pem"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="scorer",
        sasl_password="hunter2-secret",
        ssl_ca_file=ca,
    )
    config = client_config(settings)
    assert config["sasl.password"] == "hunter2-secret"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512" and config["ssl.ca.location"] == str(ca)
    faust_kwargs = faust_broker_kwargs(settings)
    assert faust_kwargs["broker_credentials"].mechanism.value == "SCRAM-SHA-512"
    assert "hunter2-secret" not in repr(settings) and "hunter2-secret" not in str(settings)


def test_missing_signing_key_says_how_to_fix():
    from registry.keys import load_signing_key, trusted_keys

    bare = Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(MissingSecretError, match="CALLSCORE_MODEL_SIGNING_KEY_FILE"):
        load_signing_key(bare)
    with pytest.raises(MissingSecretError, match="CALLSCORE_MODEL_TRUSTED_KEYS"):
        trusted_keys(bare)


def test_every_subcommand_has_help(capsys):
    paths = list(subcommand_paths())
    assert ("topics",) in paths and ("schemas", "export") in paths
    for path in paths:
        with pytest.raises(SystemExit) as excinfo:
            main([*path, "--help"])
        assert excinfo.value.code == 0, path
        assert "usage: callscore" in capsys.readouterr().out


def test_building_the_parser_imports_no_heavy_library():
    """The parser's choices come from trainer/, which must stay light for a fast `--help`."""
    code = (
        "import sys; from callscore.cli import build_parser; build_parser(); "
        "loaded = {m.split('.')[0] for m in sys.modules}; "
        "print(sorted({'sklearn', 'pandas', 'matplotlib'} & loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_configuration_is_one_line_and_non_zero(monkeypatch):
    monkeypatch.setenv("CALLSCORE_PARTITIONS", "many")
    monkeypatch.setenv("CALLSCORE_SASL_PASSWORD", "do-not-print-me")
    result = subprocess.run(
        [sys.executable, "-m", "callscore.cli", "topics"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "CALLSCORE_PARTITIONS" in result.stderr
    assert "do-not-print-me" not in result.stderr + result.stdout


def test_unreachable_broker_is_a_one_line_error(monkeypatch, capsys):
    from core.local_broker import free_port

    monkeypatch.setenv("CALLSCORE_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setattr("core.kafka.ADMIN_TIMEOUT_SECONDS", 2.0)
    assert main(["topics"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("callscore: error: Kafka at 127.0.0.1:") and "did not answer" in err


def test_topics_command_creates_every_topic_idempotently(kafka_settings, monkeypatch, capsys):
    for name, value in kafka_settings.as_env().items():
        monkeypatch.setenv(name, value)
    assert main(["topics"]) == 0
    assert "created" in capsys.readouterr().out
    assert set(ensure_topics(kafka_settings).values()) == {"exists"}

    from confluent_kafka.admin import AdminClient

    metadata = AdminClient(client_config(kafka_settings)).list_topics(timeout=10)
    for spec in topic_specs(kafka_settings):
        assert len(metadata.topics[spec.name].partitions) == spec.partitions
