"""Helpers for tests and the bench: the scorer as a subprocess, produce, collect, HTTP.

A worker here is `callscore stream` in its own process, configured only through CALLSCORE_*
variables, exactly as an operator runs it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callscore.processes import CALLSCORE, Child, settings_env
from core.kafka import client_config
from core.local_broker import BROKER_TIMINGS, free_port
from core.settings import Settings
from core.topic_reader import Record, read_topics
from core.topic_writer import Outgoing, publish
from registry.artifact import ModelArtifact, dump_artifact
from registry.keys import generate_keypair
from registry.model_topic import publish_manifest
from registry.signing import build_manifest
from testkit.factories import small_artifact


def isolated_settings(name: str, workdir: Path, **updates: Any) -> Settings:
    """Settings for one test or run: topics and a lake of its own, Apache Kafka's client timings
    (a broker's `client_settings()` in `updates` sets its own), a throwaway Ed25519 key pair under
    workdir/keys (trusted: its public key only); nothing read from the environment or .env."""
    _kid, private, public = generate_keypair(workdir / "keys" / name)
    return Settings(
        _env_file=None,
        topic_prospects=f"prospects-{name}",
        topic_tasks_prefix=f"call-tasks-{name}",
        topic_dead_letters=f"dead-letters-{name}",
        topic_models=f"models-{name}",
        topic_outcomes=f"outcomes-{name}",
        topic_outcome_dead_letters=f"outcome-dead-letters-{name}",
        topic_predictions=f"predictions-{name}",
        topic_queue=f"call-queue-{name}",
        topic_do_not_call=f"do-not-call-{name}",
        topic_queue_inputs=f"call-queue-inputs-{name}",
        topic_queue_state=f"call-queue-state-{name}",
        model_signing_key_file=private,
        model_trusted_keys=str(public),
        artifact_dir=workdir / "artifacts",
        export_url=str(workdir / "lake"),  # never a stray ./out/lake in the checkout
        **{**BROKER_TIMINGS["kafka"], **updates},
    )


def worker_settings(
    settings: Settings, tmp_path: Path, name: str = "w", **updates: Any
) -> Settings:
    """A unique app id (consumer group), data dir and free HTTP port for one worker."""
    return settings.model_copy(
        update={
            "streamer_app_id": f"scorer-{settings.topic_prospects}",
            "streamer_data_dir": tmp_path / f"faust-{name}",
            "http_port": free_port(),
            "api_port": free_port(),
            "http_host": "127.0.0.1",
            **updates,
        }
    )


@dataclass
class HttpResult:
    status: int
    body: Any
    text: str


class StreamWorker:
    """`callscore stream` as an operator runs it, as a `callscore.processes.Child`."""

    COMMAND: tuple[str, ...] = ("stream",)

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.child = Child.start(
            self.COMMAND[0],
            [CALLSCORE, *self.COMMAND, "-l", "info"],
            log_path,
            settings_env(settings),
        )
        self.process = self.child.process

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    def http(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> HttpResult:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        return HttpResult(status, parsed, text)

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}):\n{self.log()}")
            try:
                if predicate():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.log()}")

    def readiness(self) -> dict[str, Any]:
        result = self.http("GET", "/readyz")
        return result.body or {}

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_until(lambda: self.readiness().get("ready") is True, timeout, "/readyz ready")

    def metric(self, name: str, labels: str = "") -> float:
        """Sum of the samples of one metric (optionally filtered by a label substring)."""
        total = 0.0
        for line in self.http("GET", "/metrics").text.splitlines():
            if line.startswith(name) and (line[len(name)] in " {") and labels in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def served_version(self) -> int:
        """The version of the model the process serves (0: none), from its /metrics."""
        return int(self.metric("callscore_model_version"))

    def log(self) -> str:
        return self.child.log_tail()

    def kill(self) -> None:
        self.child.kill()

    def stop(self, timeout: float = 20) -> int | None:
        return self.child.stop(timeout)


class MonitorWorker(StreamWorker):
    """`callscore monitor` in its own process; its /metrics is on CALLSCORE_MONITOR_HTTP_PORT."""

    COMMAND = ("monitor",)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.monitor_http_port}"


class ApiWorker(StreamWorker):
    """`callscore api` in its own process, on CALLSCORE_API_PORT."""

    COMMAND = ("api",)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    @property
    def token(self) -> str | None:
        """The API's bearer token, which these helpers send (`http` sends only the one given)."""
        secret = self.settings.api_token
        return None if secret is None else secret.get_secret_value()

    def wait_open_tasks(self, count: int, timeout: float) -> None:
        """Until the API's mirror of the call queue holds `count` open tasks."""
        self.wait_until(
            lambda: (
                self.http("GET", "/queue?limit=1", token=self.token).body["open_total"] == count
            ),
            timeout,
            f"{count} open tasks in the API's mirror of the call queue",
        )

    def claim(self, agent: str, n: int, timeout: float = 60.0) -> dict[str, Any]:
        """POST /queue/claim, waiting as long as the queue's decisions take (not `http`'s 5 s)."""
        body = json.dumps({"agent": agent, "n": n}).encode()
        request = urllib.request.Request(self.base_url + "/queue/claim", data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            document: dict[str, Any] = json.loads(answer.read())
        return document


def produce(
    settings: Settings,
    records: Iterable[tuple[bytes | None, bytes | None]],
    topic: str | None = None,
    partitioner: str = "consistent_random",
) -> int:
    """Produce to `topic` (default: the prospects topic) and wait for every acknowledgement.

    `partitioner` is librdkafka's: its default `consistent_random` (CRC32 of the key), or
    `murmur2_random`, what Java, kafkajs and aiokafka producers use."""
    target = topic or settings.topic_prospects
    outgoing = (Outgoing(target, key, value) for key, value in records)
    config: dict[str, Any] = {"enable.idempotence": False, "partitioner": partitioner}
    return publish(settings, outgoing, "test records", **config)


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of `topic` (AdminClient; the local broker
    answers this correctly, unlike watermarks)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings))
    partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)])
    result = futures[group].result(timeout=15)
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def event_bytes(event: dict[str, Any]) -> tuple[bytes, bytes]:
    return event["prospect_id"].encode(), json.dumps(event).encode()


def collect(
    settings: Settings,
    topics: Iterable[str],
    done: Callable[[list[Record]], bool],
    timeout: float,
    settle: float = 0.0,
) -> list[Record]:
    """Read the topics from the beginning until done(records) (then `settle` s more) or timeout."""
    return read_topics(settings, topics, done=done, timeout=timeout, settle=settle)


def publish_model(settings: Settings, version: int, seed: int = 1) -> ModelArtifact:
    artifact = small_artifact(version, seed=seed)
    manifest = build_manifest(dump_artifact(artifact), artifact.metadata, settings)
    publish_manifest(settings, manifest)  # the topic's next sequence, signed
    return artifact


def as_event(data: dict[str, Any]) -> Any:
    from schemas import ProspectEvent

    return ProspectEvent.model_validate_json(json.dumps(data))
