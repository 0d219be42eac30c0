"""Kafka plumbing shared by every component: client configs, security, topic creation."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from core.errors import BrokerUnavailableError, CallscoreError
from core.kafka_logs import librdkafka_logger
from core.settings import Settings

ADMIN_TIMEOUT_SECONDS = 15.0


def broker_unavailable(servers: str, detail: str) -> BrokerUnavailableError:
    """The one wording of "the broker did not answer": where, why, and what to do."""
    return BrokerUnavailableError(
        f"Kafka at {servers} did not answer {detail}: start it, or point "
        "CALLSCORE_BOOTSTRAP_SERVERS at a running broker"
    )


def client_config(settings: Settings) -> dict[str, Any]:
    """Connection and security settings common to every confluent-kafka client.

    Its log lines go to the one `librdkafka` logger, never straight to stderr: the process
    decides what reaches the output (core.kafka_logs)."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "logger": librdkafka_logger(),
    }
    if settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        assert settings.sasl_password is not None  # enforced by Settings validation
        config["sasl.password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_ca_file:
        config["ssl.ca.location"] = str(settings.ssl_ca_file)
    return config


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config = client_config(settings) | {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.producer_linger_ms,
        "message.max.bytes": settings.model_record_max_bytes,
    }
    return config | overrides


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    config = client_config(settings) | {
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(settings.session_timeout_seconds * 1000),
        "heartbeat.interval.ms": int(settings.heartbeat_interval_seconds * 1000),
        "fetch.wait.max.ms": settings.fetch_max_wait_ms,
    }
    return config | overrides


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


DAY_MS = 86_400_000


def retention(days: float) -> dict[str, str]:
    return {"retention.ms": str(int(days * DAY_MS))}


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the system uses. The model topic has one partition: order = history. The
    prediction log and the outcomes keep Settings.history_retention_days (the labelled history
    reads older records from the lake), the dead letters Settings.dead_letter_retention_days;
    the compacted topics keep every key's newest record; the rest the broker's default."""
    per_key = settings.partitions
    compacted = {"cleanup.policy": "compact"}
    history = retention(settings.history_retention_days)
    dead_letters = retention(settings.dead_letter_retention_days)
    return [
        TopicSpec(settings.topic_prospects, per_key),
        *(TopicSpec(topic, per_key) for topic in settings.task_topics.values()),
        TopicSpec(settings.topic_dead_letters, per_key, dead_letters),
        TopicSpec(settings.topic_outcomes, per_key, history),
        TopicSpec(settings.topic_outcome_dead_letters, per_key, dead_letters),
        TopicSpec(settings.topic_predictions, per_key, history),
        TopicSpec(settings.topic_queue, per_key, compacted),
        TopicSpec(settings.topic_do_not_call, per_key, compacted),
        TopicSpec(settings.topic_queue_inputs, per_key),
        TopicSpec(settings.topic_queue_state, per_key, compacted),
        TopicSpec(
            settings.topic_models,
            1,
            {
                "cleanup.policy": "compact",
                "max.message.bytes": str(settings.model_record_max_bytes),
            },
        ),
    ]


def ensure_topics(settings: Settings, timeout: float | None = None) -> dict[str, str]:
    """Create missing topics. Returns topic -> 'created' | 'exists'."""
    timeout = timeout or ADMIN_TIMEOUT_SECONDS
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(settings))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0)  # hands the client's queued log lines (the reason) to the logger
        raise broker_unavailable(settings.bootstrap_servers, f"within {timeout:.0f} s") from exc
    specs = topic_specs(settings)
    futures = admin.create_topics(
        [
            NewTopic(s.name, s.partitions, settings.replication_factor, config=s.config)
            for s in specs
        ],
        operation_timeout=timeout,
    )
    result = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            result[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            result[name] = "exists"
    return result


def retention_shortfalls(settings: Settings, timeout: float | None = None) -> list[str]:
    """One line per existing topic that keeps records for less time than its spec asks (a
    topic made before, or by hand): the loop would lose what it needs. A topic whose broker
    does not report its retention (the local broker, for an unset one) is not judged."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    wanted = {
        s.name: int(s.config["retention.ms"])
        for s in topic_specs(settings)
        if "retention.ms" in s.config
    }
    admin = AdminClient(client_config(settings))
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in wanted])
    lines = []
    for resource, future in futures.items():
        entry = future.result(timeout=timeout or ADMIN_TIMEOUT_SECONDS).get("retention.ms")
        if entry is None or entry.value is None:
            continue
        kept, needed = int(entry.value), wanted[resource.name]
        if 0 <= kept < needed:
            lines.append(
                f"topic '{resource.name}' keeps records {kept / DAY_MS:g} days "
                f"(retention.ms={kept}), less than the {needed / DAY_MS:g} the loop needs: "
                f"raise it (kafka-configs --alter --entity-type topics --entity-name "
                f"{resource.name} --add-config retention.ms={needed})"
            )
    return lines


def queue_topics(settings: Settings) -> list[str]:
    """The topics the call queue writes at explicit partitions (callqueue/inputs.py)."""
    return [settings.topic_queue_inputs, settings.topic_queue, settings.topic_queue_state]


def check_queue_partitions(settings: Settings, timeout: float | None = None) -> None:
    """The queue's topics must have exactly Settings.partitions partitions: a prospect's queue
    partition is computed from that number, and a topic created with another count (or
    auto-created by the broker) would put its records elsewhere or refuse them."""
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient(client_config(settings)).list_topics(
        timeout=timeout or ADMIN_TIMEOUT_SECONDS
    )
    for name in queue_topics(settings):
        topic = metadata.topics.get(name)
        found = len(topic.partitions) if topic is not None else 0
        if found != settings.partitions:
            raise CallscoreError(
                f"topic '{name}' has {found} partitions, CALLSCORE_PARTITIONS is "
                f"{settings.partitions}: the call queue needs them equal (recreate the topic, "
                "or set CALLSCORE_PARTITIONS to its count)"
            )


def faust_broker_kwargs(settings: Settings) -> dict[str, Any]:
    """The same connection and security settings, in Faust's (aiokafka's) terms."""
    import faust

    kwargs: dict[str, Any] = {
        "broker": [f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        "broker_session_timeout": settings.session_timeout_seconds,
        "broker_heartbeat_interval": settings.heartbeat_interval_seconds,
    }
    context = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.ssl_ca_file) if settings.ssl_ca_file else None
        )
    if settings.security_protocol.startswith("SASL"):
        assert settings.sasl_password is not None and settings.sasl_mechanism is not None
        kwargs["broker_credentials"] = faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    elif context is not None:
        kwargs["broker_credentials"] = faust.SSLCredentials(context)
    return kwargs
