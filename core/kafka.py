"""Kafka plumbing shared by every component: client configs, security, topic creation."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
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
    exact_partitions: bool = False  # records are placed (or ordered) by this very count


DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# How soon the compacted topics that change all day (the call queue, its changelog, the
# do-not-call list) are compacted. The active segment is never compacted and a quiet partition
# fills its 1 GiB only after weeks: rolled every hour instead of every week (Kafka's default),
# its superseded records are compacted the same day. The cleaner takes a log once half of it is
# superseded records and may take any record at once (Kafka's defaults, pinned on the topics so
# that a cluster's own defaults cannot hold compaction back): a reader of such a topic from its
# start, the queue worker taking a partition over, `callscore api`, a dialer rebuilding its
# mirror, reads at most about twice its live keys plus an hour of changes. No reader needs a
# superseded record: the newest per key is the whole state.
COMPACTED_CHANGING = {
    "segment.ms": str(HOUR_MS),
    "min.compaction.lag.ms": "0",
    "min.cleanable.dirty.ratio": "0.5",
}


def retention(days: float) -> dict[str, str]:
    return {"retention.ms": str(int(days * DAY_MS))}


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the system uses (docs/operations.md#topic-settings has each setting's reason).

    Every topic gets Settings.min_insync_replicas. The model topic has one partition: order =
    history. The prediction log and the outcomes keep Settings.history_retention_days (the
    labelled history reads older records from the lake), the dead letters
    Settings.dead_letter_retention_days; the compacted topics keep every key's newest record and
    never delete by time, and a tombstone for Settings.tombstone_retention_days; the rest keep
    the broker's default retention."""
    per_key = settings.partitions
    durable = {"min.insync.replicas": str(settings.min_insync_replicas)}
    compacted = durable | {
        "cleanup.policy": "compact",
        "delete.retention.ms": str(int(settings.tombstone_retention_days * DAY_MS)),
    }
    changing = compacted | COMPACTED_CHANGING
    history = durable | retention(settings.history_retention_days)
    dead_letters = durable | retention(settings.dead_letter_retention_days)
    return [
        TopicSpec(settings.topic_prospects, per_key, durable),
        *(TopicSpec(topic, per_key, durable) for topic in settings.task_topics.values()),
        TopicSpec(settings.topic_dead_letters, per_key, dead_letters),
        TopicSpec(settings.topic_outcomes, per_key, history),
        TopicSpec(settings.topic_outcome_dead_letters, per_key, dead_letters),
        TopicSpec(settings.topic_predictions, per_key, history),
        TopicSpec(settings.topic_queue, per_key, changing, exact_partitions=True),
        TopicSpec(settings.topic_do_not_call, per_key, changing),
        TopicSpec(settings.topic_queue_inputs, per_key, durable, exact_partitions=True),
        TopicSpec(settings.topic_queue_state, per_key, changing, exact_partitions=True),
        TopicSpec(
            settings.topic_models,
            1,
            compacted | {"max.message.bytes": str(settings.model_record_max_bytes)},
            exact_partitions=True,
        ),
    ]


def replication_refused(settings: Settings, brokers: int) -> CallscoreError:
    """The one line for a replication factor the cluster cannot give a new topic."""
    return CallscoreError(
        f"CALLSCORE_REPLICATION_FACTOR is {settings.replication_factor} but {brokers} "
        f"broker{'s' if brokers != 1 else ''} answered at {settings.bootstrap_servers}: every "
        "replica of a topic needs a broker of its own; start the missing brokers, or set "
        f"CALLSCORE_REPLICATION_FACTOR (and CALLSCORE_MIN_INSYNC_REPLICAS) to {brokers} or less"
    )


def ensure_topics(settings: Settings, timeout: float | None = None) -> dict[str, str]:
    """Create missing topics. Returns topic -> 'created' | 'exists'.

    Refuses (one line) to create a topic with more replicas than brokers answer; existing topics
    are left as they are, so a process starting while a broker is down is not stopped by it."""
    timeout = timeout or ADMIN_TIMEOUT_SECONDS
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(settings))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0)  # hands the client's queued log lines (the reason) to the logger
        raise broker_unavailable(settings.bootstrap_servers, f"within {timeout:.0f} s") from exc
    specs = topic_specs(settings)
    result = {s.name: "exists" for s in specs if s.name in metadata.topics}
    missing = [s for s in specs if s.name not in result]
    if not missing:
        return result
    if settings.replication_factor > len(metadata.brokers):
        raise replication_refused(settings, len(metadata.brokers))
    futures = admin.create_topics(
        [
            NewTopic(s.name, s.partitions, settings.replication_factor, config=s.config)
            for s in missing
        ],
        operation_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            result[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            result[name] = "exists"
    # A created topic reaches the brokers' metadata a moment later: wait for it, so that what
    # runs next (a producer, topic_shortfalls) finds every topic.
    deadline = time.monotonic() + timeout
    while not all(s.name in metadata.topics for s in missing) and time.monotonic() < deadline:
        time.sleep(0.05)
        metadata = admin.list_topics(timeout=timeout)
    return {s.name: result[s.name] for s in specs}


def _days(ms: str) -> str:
    return "forever" if int(ms) < 0 else f"{int(ms) / DAY_MS:g}"


def _partitions(count: int) -> str:
    return f"{count} partition{'s' if count != 1 else ''}"


def _policies(value: str) -> set[str]:
    return {p.strip() for p in value.strip("[]").split(",") if p.strip()}


@dataclass(frozen=True)
class ConfigCheck:
    """When a topic's value of one spec'd setting is weaker than the spec's, and what it costs."""

    weaker: Callable[[str, str], bool]  # (found, wanted)
    costs: str

    def says(self, key: str, found: str, wanted: str) -> str:
        if key == "retention.ms":
            return (
                f"keeps records {_days(found)} days (retention.ms={found}), less than the "
                f"{_days(wanted)} the loop needs"
            )
        return f"has {key}={found} where {wanted} is configured: {self.costs}"


# One check per setting topic_specs gives a topic (a test keeps them in step).
CONFIG_CHECKS: dict[str, ConfigCheck] = {
    "min.insync.replicas": ConfigCheck(
        lambda found, wanted: int(found) < int(wanted),
        "an acknowledged record may be on fewer brokers, and lost with them",
    ),
    "retention.ms": ConfigCheck(
        lambda found, wanted: int(found) >= 0 and (int(wanted) < 0 or int(found) < int(wanted)),
        "the loop loses records it reads",
    ),
    "cleanup.policy": ConfigCheck(
        lambda found, wanted: _policies(found) != _policies(wanted),
        "records are deleted by time (an open task, an objection or a model version "
        "disappears) or superseded ones are never removed",
    ),
    "delete.retention.ms": ConfigCheck(
        lambda found, wanted: int(found) < int(wanted),
        "a reader that catches up later than that misses a withdrawal or a lift (its "
        "tombstone is gone)",
    ),
    "segment.ms": ConfigCheck(
        lambda found, wanted: int(found) > int(wanted),
        "the active segment, never compacted, holds superseded records longer",
    ),
    "min.compaction.lag.ms": ConfigCheck(
        lambda found, wanted: int(found) > int(wanted),
        "superseded records wait longer before they may be compacted",
    ),
    "min.cleanable.dirty.ratio": ConfigCheck(
        lambda found, wanted: float(found) > float(wanted),
        "the log grows further before it is compacted, and takes longer to read from its start",
    ),
    "max.message.bytes": ConfigCheck(
        lambda found, wanted: int(found) < int(wanted),
        "model records up to CALLSCORE_MODEL_RECORD_MAX_BYTES are refused",
    ),
}


def topic_shortfalls(settings: Settings, timeout: float | None = None) -> list[str]:
    """One line per way an existing topic is weaker than its spec (a topic made before, by hand,
    or by another version): fewer partitions (another count for the topics placed by it), fewer
    replicas than Settings.replication_factor, and every spec'd setting (CONFIG_CHECKS). Also a
    line when fewer brokers answer than the replication factor, and one when three replicas are
    asked for with one in sync. A setting the broker does not report is not judged."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    timeout = timeout or ADMIN_TIMEOUT_SECONDS
    admin = AdminClient(client_config(settings))
    metadata = admin.list_topics(timeout=timeout)
    lines = []
    replicas, in_sync = settings.replication_factor, settings.min_insync_replicas
    if replicas >= 3 and in_sync < 2:
        lines.append(
            f"CALLSCORE_REPLICATION_FACTOR is {replicas} and CALLSCORE_MIN_INSYNC_REPLICAS "
            f"{in_sync}: an acknowledged record may be on one broker only; set "
            "CALLSCORE_MIN_INSYNC_REPLICAS=2 and rerun `callscore topics`"
        )
    brokers = len(metadata.brokers)
    if brokers < replicas:
        waits = (
            f"; with fewer than CALLSCORE_MIN_INSYNC_REPLICAS ({in_sync}) writes wait "
            "(NOT_ENOUGH_REPLICAS)"
            if brokers < in_sync
            else ""
        )
        lines.append(
            f"{brokers} of the {replicas} brokers CALLSCORE_REPLICATION_FACTOR asks for "
            f"answered: partitions are under-replicated until the others are back{waits}"
        )
    fix = f"kafka-configs.sh --bootstrap-server {settings.bootstrap_servers} --alter"
    specs = {s.name: s for s in topic_specs(settings) if s.name in metadata.topics}
    for name, spec in specs.items():
        partitions = metadata.topics[name].partitions.values()
        found = len(partitions)
        if spec.exact_partitions and found != spec.partitions:
            lines.append(
                f"topic '{name}' has {_partitions(found)} where {spec.partitions} "
                f"{'is' if spec.partitions == 1 else 'are'} configured: its records are placed "
                "or ordered by that count; recreate the topic"
            )
        elif found < spec.partitions:
            lines.append(
                f"topic '{name}' has {_partitions(found)}, fewer than CALLSCORE_PARTITIONS "
                f"{spec.partitions}: at most {found} consumers of a group share its work "
                f"(kafka-topics.sh --alter --topic {name} --partitions {spec.partitions} moves "
                "keys to other partitions: add them before traffic)"
            )
        fewest = min((len(p.replicas) for p in partitions), default=replicas)
        if fewest < replicas:
            lines.append(
                f"topic '{name}' has {fewest} replica{'s' if fewest != 1 else ''} per partition, "
                f"CALLSCORE_REPLICATION_FACTOR is {replicas}: losing a broker loses its records "
                "(add replicas with kafka-reassign-partitions.sh)"
            )
    if not specs:
        return lines
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in specs])
    for resource, future in futures.items():
        entries = future.result(timeout=timeout)
        for key, wanted in specs[resource.name].config.items():
            entry = entries.get(key)
            if entry is None or entry.value is None:
                continue
            check = CONFIG_CHECKS[key]
            if check.weaker(entry.value, wanted):
                lines.append(
                    f"topic '{resource.name}' {check.says(key, entry.value, wanted)}; fix: "
                    f"{fix} --entity-type topics --entity-name {resource.name} --add-config "
                    f"{key}={wanted}"
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
