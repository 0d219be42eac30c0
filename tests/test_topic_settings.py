"""What a deployment needs from its topics: replication and min.insync.replicas from Settings,
the compacted topics' settings, the docs' table of them, and `callscore topics` naming an
existing topic that is weaker than configured, or refusing more replicas than brokers (the
session's Apache Kafka for those)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from callscore.cli import main
from core.kafka import (
    COMPACTED_CHANGING,
    CONFIG_CHECKS,
    DAY_MS,
    client_config,
    ensure_topics,
    topic_shortfalls,
    topic_specs,
)
from core.settings import Settings

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


def compacted(settings: Settings) -> list[str]:
    return [
        settings.topic_queue,
        settings.topic_queue_state,
        settings.topic_do_not_call,
        settings.topic_models,
    ]


# --- the specs, without a broker ----------------------------------------------------------------


def test_every_topic_gets_the_settings_replication():
    settings = Settings(_env_file=None, replication_factor=3, min_insync_replicas=2)  # type: ignore[call-arg]
    for spec in topic_specs(settings):
        assert spec.config["min.insync.replicas"] == "2", spec.name


def test_compacted_topics_keep_tombstones_and_never_delete_by_time():
    settings = Settings(_env_file=None, tombstone_retention_days=3)  # type: ignore[call-arg]
    specs = {s.name: s for s in topic_specs(settings)}
    assert {n for n, s in specs.items() if "cleanup.policy" in s.config} == set(compacted(settings))
    for name in compacted(settings):
        config = specs[name].config
        assert config["cleanup.policy"] == "compact", name  # never compact,delete
        assert config["delete.retention.ms"] == str(3 * DAY_MS), name
        assert "retention.ms" not in config, name
    for name in compacted(settings)[:3]:  # the topics that change all day
        assert COMPACTED_CHANGING.items() <= specs[name].config.items(), name
    models = specs[settings.topic_models]
    assert models.partitions == 1 and models.exact_partitions
    assert models.config["max.message.bytes"] == str(settings.model_record_max_bytes)
    assert not COMPACTED_CHANGING.keys() & models.config.keys()


def test_every_spec_setting_has_a_shortfall_check():
    keys = {k for s in topic_specs(Settings(_env_file=None)) for k in s.config}  # type: ignore[call-arg]
    assert keys == set(CONFIG_CHECKS)


@pytest.mark.parametrize(
    ("key", "found", "wanted", "weaker"),
    [
        ("retention.ms", "604800000", "1209600000", True),
        ("retention.ms", "-1", "1209600000", False),  # forever
        ("retention.ms", "1209600000", "-1", True),
        ("cleanup.policy", "delete", "compact", True),
        ("cleanup.policy", "compact,delete", "compact", True),  # deletes by time too
        ("cleanup.policy", "compact", "compact", False),
        ("min.insync.replicas", "1", "2", True),
        ("min.insync.replicas", "2", "1", False),  # a stricter cluster is kept
        ("delete.retention.ms", "86400000", "604800000", True),
        ("segment.ms", "604800000", "3600000", True),
        ("segment.ms", "600000", "3600000", False),
        ("min.compaction.lag.ms", "60000", "0", True),
        ("min.cleanable.dirty.ratio", "0.9", "0.5", True),
        ("min.cleanable.dirty.ratio", "0.1", "0.5", False),
        ("max.message.bytes", "1048588", "2097152", True),
    ],
)
def test_a_setting_is_weaker_in_its_own_direction(key, found, wanted, weaker):
    assert CONFIG_CHECKS[key].weaker(found, wanted) is weaker


def documented_settings() -> dict[str, dict[str, str]]:
    """Kafka setting -> topic -> value, from docs/operations.md's "Topic settings" table."""
    text = OPERATIONS.read_text()
    section = text[text.index("### Topic settings") :]
    section = section[: section.index("\n### ", 1) if "\n### " in section[1:] else None]
    every = [s.name for s in topic_specs(Settings(_env_file=None))]  # type: ignore[call-arg]
    found: dict[str, dict[str, str]] = {}
    for row in re.findall(r"^\| (.+) \|$", section, re.M):
        setting, topics, value, _why = row.split(" | ", 3)
        key = re.fullmatch(r"`([a-z.]+)`", setting)
        if key is None:
            continue  # the header, or a row about something else (replicas)
        names = every if topics == "every topic" else re.findall(r"`([^`]+)`", topics)
        first = re.match(r"`([^`]+)`", value)
        assert first, row
        for name in names:
            found.setdefault(key.group(1), {})[name] = first.group(1)
    return found


def test_the_docs_table_says_what_topic_specs_set():
    specs = topic_specs(Settings(_env_file=None))  # type: ignore[call-arg]
    expected: dict[str, dict[str, str]] = {}
    for spec in specs:
        for key, value in spec.config.items():
            expected.setdefault(key, {})[spec.name] = value
    assert documented_settings() == expected


# --- on the session's Apache Kafka --------------------------------------------------------------


def configs(settings: Settings, topic: str) -> dict[str, str]:
    admin = AdminClient(client_config(settings))
    (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return {k: e.value for k, e in future.result(10).items()}


def test_created_topics_carry_every_spec_setting(kafka_settings):
    assert set(ensure_topics(kafka_settings).values()) == {"created"}
    for spec in topic_specs(kafka_settings):
        held = configs(kafka_settings, spec.name)
        for key, value in spec.config.items():
            assert held[key] == value, (spec.name, key)
    assert topic_shortfalls(kafka_settings) == []


def test_a_topic_made_by_hand_with_weaker_settings_is_named(kafka_settings):
    s = kafka_settings
    admin = AdminClient(client_config(s))
    weak = [
        NewTopic(s.topic_queue, 1, 1, config={"cleanup.policy": "delete"}),
        NewTopic(s.topic_do_not_call, s.partitions, 1, config={"cleanup.policy": "compact,delete"}),
        NewTopic(
            s.topic_models,
            1,
            1,
            config={"cleanup.policy": "compact", "max.message.bytes": "1048588"},
        ),
        NewTopic(s.topic_prospects, 1, 1),
    ]
    for future in admin.create_topics(weak).values():
        future.result(10)
    ensure_topics(s)  # creates the others, leaves these as they are
    lines = topic_shortfalls(s)
    named = {re.match(r"topic '([^']+)'", line).group(1) for line in lines}  # type: ignore[union-attr]
    assert named == {s.topic_queue, s.topic_do_not_call, s.topic_models, s.topic_prospects}

    def about(topic: str, what: str) -> str:
        (line,) = [x for x in lines if x.startswith(f"topic '{topic}' {what}")]
        return line

    assert "1 partition where 2 are configured" in about(s.topic_queue, "has 1 partition ")
    for key in ("cleanup.policy", "delete.retention.ms", "segment.ms"):
        line = about(s.topic_queue, f"has {key}=")
        assert f"--entity-name {s.topic_queue} --add-config {key}=" in line
    assert "compact,delete where compact" in about(s.topic_do_not_call, "has cleanup.policy=")
    assert "max.message.bytes=1048588 where 2097152" in about(s.topic_models, "has max.message")
    assert "fewer than CALLSCORE_PARTITIONS 2" in about(s.topic_prospects, "has 1 partition,")
    # the queue: partitions, policy, tombstones, segments (Kafka's defaults for the other two);
    # do-not-call: policy, tombstones, segments; models: size, tombstones; prospects: partitions
    assert len(lines) == 10, lines

    # the same topics against a cluster's settings: replicas and min.insync.replicas fall short
    cluster = s.model_copy(update={"replication_factor": 2, "min_insync_replicas": 2})
    lines = topic_shortfalls(cluster)
    assert lines[0].startswith("1 of the 2 brokers CALLSCORE_REPLICATION_FACTOR asks for")
    for spec in topic_specs(cluster):
        assert about_any(lines, f"topic '{spec.name}' has 1 replica per partition")
        assert about_any(lines, f"topic '{spec.name}' has min.insync.replicas=1 where 2")


def about_any(lines: list[str], start: str) -> bool:
    return any(line.startswith(start) for line in lines)


def test_more_replicas_than_brokers_is_refused_in_one_line(kafka_settings, monkeypatch, capsys):
    brokers = len(AdminClient(client_config(kafka_settings)).list_topics(timeout=10).brokers)
    replicas = max(3, brokers + 1)
    for name, value in kafka_settings.as_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CALLSCORE_REPLICATION_FACTOR", str(replicas))
    monkeypatch.setenv("CALLSCORE_MIN_INSYNC_REPLICAS", "2")
    assert main(["topics"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(
        f"callscore: error: CALLSCORE_REPLICATION_FACTOR is {replicas} but {brokers} broker"
    )
    assert "start the missing brokers, or set CALLSCORE_REPLICATION_FACTOR" in err
    existing = AdminClient(client_config(kafka_settings)).list_topics(timeout=10).topics
    assert not {s.name for s in topic_specs(kafka_settings)} & set(existing)  # none half-made
