"""`callscore topics` gives the prediction log, the outcomes and the dead letters their retention
from Settings, and names an existing topic that keeps less than the loop needs (real broker)."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from core.kafka import DAY_MS, client_config, ensure_topics, topic_shortfalls


def retention_ms(settings, topic: str) -> str | None:  # type: ignore[no-untyped-def]
    admin = AdminClient(client_config(settings))
    (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    entry = future.result(10).get("retention.ms")
    return None if entry is None else entry.value


def test_created_topics_keep_what_the_loop_needs(kafka_settings):
    ensure_topics(kafka_settings)
    history = str(int(kafka_settings.history_retention_days * DAY_MS))
    assert retention_ms(kafka_settings, kafka_settings.topic_predictions) == history
    assert retention_ms(kafka_settings, kafka_settings.topic_outcomes) == history
    dead = str(int(kafka_settings.dead_letter_retention_days * DAY_MS))
    assert retention_ms(kafka_settings, kafka_settings.topic_dead_letters) == dead
    assert topic_shortfalls(kafka_settings) == []


def test_an_existing_topic_keeping_too_little_is_named(kafka_settings):
    week = str(7 * DAY_MS)  # Apache Kafka's default
    admin = AdminClient(client_config(kafka_settings))
    created = admin.create_topics(
        [NewTopic(kafka_settings.topic_outcomes, 2, 1, config={"retention.ms": week})]
    )
    for future in created.values():
        future.result(10)
    ensure_topics(kafka_settings)  # leaves the existing topic as it is
    (line,) = topic_shortfalls(kafka_settings)
    assert f"'{kafka_settings.topic_outcomes}' keeps records 7 days" in line
    assert f"retention.ms={int(kafka_settings.history_retention_days * DAY_MS)}" in line
