"""A three-broker Apache Kafka cluster that loses brokers while the whole system runs.

Three KRaft nodes from the launcher (core/local_broker/kafka.py), every topic with replication
factor 3 and min.insync.replicas 2, every producer acks=all. The scorer (with its queue worker),
the monitor and `callscore api` run while events, outcomes and do-not-call entries stream in:

1. The broker leading most of the prospects' and the queue's partitions is SIGKILLed mid-stream
   (leadership moves, group coordinators move, producers retry) and started again 30 s later.
2. Then two of the three are SIGKILLed: with fewer than min.insync.replicas in sync, writes
   stop; the scorer counts its failed sends (callscore_batch_send_retries_total) and keeps
   running; both come back and everything produced meanwhile is scored.

After each phase, against the reference model and the producers' own records (never the
product's counts alone): every event has exactly one task id (uuid5 of its event id, repeats
included), the final `call-queue` equals the reference model key by key, the monitor joined
every outcome, and no process crashed or was restarted.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callqueue.inputs import KIND_HEADER, decode_input
from core.consumer_lag import queue_group_id
from core.kafka import client_config, ensure_topics, topic_specs
from core.local_broker import KafkaCluster, free_port, start_kafka
from core.local_broker.kafka import topic_replication
from core.settings import Settings
from core.topic_reader import Record, read_topics
from schemas import task_id_for
from testkit.factories import valid_event
from testkit.harness import (
    ApiWorker,
    MonitorWorker,
    event_bytes,
    isolated_settings,
    publish_model,
    worker_settings,
)
from tests.test_call_queue import check_against_reference, outcome_for

pytestmark = pytest.mark.slow

PROSPECTS = 150
EVENTS_PER_SECOND = 40
DOWN_SECONDS = 30.0  # phase 1: the killed leader is started again after this
MID_STREAM_SECONDS = 5.0  # the feed runs this long before a kill (about 200 events)
TWO_DOWN_SECONDS = 15.0  # phase 2: at least this long with two of three down


def outage(
    cluster: KafkaCluster,
    feed: Feed,
    nodes: Callable[[], list[int]],
    before: float,
    until: Callable[[], None],
) -> list[int]:
    """The feed runs `before` s; then `nodes()` are SIGKILLed and started again once `until()`
    returns; the feed stops (every record acknowledged) 5 s after they are back. The nodes."""
    feed.start()
    time.sleep(before)
    killed = nodes()
    for node_id in killed:
        cluster.kill(node_id)
    until()
    for node_id in killed:
        cluster.start_node(node_id)
    time.sleep(5)
    feed.stop()
    return killed


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cluster = start_kafka(nodes=3, folder=tmp_path_factory.mktemp("cluster"), heap_mb=384)
    try:
        yield cluster
    finally:
        cluster.stop()


class Feed:
    """Events (with repeats and late ones), outcomes and do-not-call entries produced steadily
    by one idempotent acks=all producer on its own thread; what it sent is the test's record."""

    def __init__(self, settings: Settings, seed: int, prefix: str, start: datetime) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.at = start
        self.sent_events: list[dict[str, Any]] = []
        self.sent_outcomes: list[str] = []  # the called tasks' ids
        self.sent_entries = 0
        self.failed: list[str] = []
        self.producer = Producer(
            {
                **client_config(settings),
                "acks": "all",
                "enable.idempotence": True,
                "message.timeout.ms": 240_000,  # longer than any outage here
                "linger.ms": 5,
            }
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.failed.append(str(error))

    def _send(self, topic: str, key: bytes, value: bytes | None) -> None:
        self.producer.produce(topic, key=key, value=value, on_delivery=self._delivered)

    def _one_tick(self, i: int) -> None:
        s, rng = self.settings, self.rng
        self.at += timedelta(minutes=rng.uniform(1, 30))
        if self.sent_events and rng.random() < 0.05:  # a redelivered event: the same task id
            event = rng.choice(self.sent_events)
        elif self.sent_events and rng.random() < 0.1:  # late: dated before its prospect's last
            earlier = rng.choice(self.sent_events)
            at = datetime.fromisoformat(earlier["occurred_at"]) - timedelta(hours=2)
            event = {
                **earlier,
                "event_id": f"{self.prefix}-late-{i}",
                "occurred_at": at.isoformat(),
            }
        else:
            event = valid_event(
                event_id=f"{self.prefix}-{i}",
                prospect_id=f"C{rng.randrange(PROSPECTS)}",
                occurred_at=self.at.isoformat(),
                balance=rng.randrange(0, 20_000),
                campaign=rng.randrange(1, 6),
            )
        self._send(s.topic_prospects, *event_bytes(event))
        self.sent_events.append(event)
        if i % 4 == 3:  # a call of an earlier event (its task open, superseded or expired)
            called = rng.choice(self.sent_events[-40:])
            self._send(s.topic_outcomes, *outcome_for(called, self.at.isoformat()))
            self.sent_outcomes.append(task_id_for(called["event_id"]))
        if i % 50 == 49:  # an objection, now and then lifted again
            prospect = f"C{rng.randrange(PROSPECTS)}"
            entry = {"prospect_id": prospect, "requested_at": self.at.isoformat()}
            self._send(s.topic_do_not_call, prospect.encode(), json.dumps(entry).encode())
            if rng.random() < 0.3:
                self._send(s.topic_do_not_call, prospect.encode(), None)
                self.sent_entries += 1
            self.sent_entries += 1

    def _run(self) -> None:
        i = len(self.sent_events)
        while not self._stop.is_set():
            self._one_tick(i)
            i += 1
            self.producer.poll(0)
            time.sleep(1 / EVENTS_PER_SECOND)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self, flush_seconds: float = 240.0) -> None:
        """Stop producing and wait for every acknowledgement."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)
        assert self.producer.flush(flush_seconds) == 0, "records never acknowledged"
        assert not self.failed, f"records the cluster refused for good: {self.failed[:3]}"

    @property
    def produced(self) -> int:
        """Records the queue's input topic receives at least: every distinct event (a repeat
        within the scorer's dedupe window is dropped there), outcome and entry."""
        distinct = len({e["event_id"] for e in self.sent_events})
        return distinct + len(self.sent_outcomes) + self.sent_entries


def topic_names(settings: Settings) -> list[str]:
    return [spec.name for spec in topic_specs(settings)]


def cluster_metadata(settings: Settings, topics: list[str]) -> Any:
    """The cluster's metadata once it lists every one of `topics` (a broker's metadata cache
    learns of a new topic a moment after the controller created it)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings))
    deadline = time.monotonic() + 30
    while True:
        metadata = admin.list_topics(timeout=15)
        if all(t in metadata.topics and metadata.topics[t].partitions for t in topics):
            return metadata
        assert time.monotonic() < deadline, f"topics missing from the metadata: {topics}"
        time.sleep(0.2)


def leading_node(settings: Settings, topics: list[str]) -> int:
    """The node leading most partitions of `topics`."""
    metadata = cluster_metadata(settings, topics)
    leaders = Counter(
        p.leader for t in topics for p in metadata.topics[t].partitions.values() if p.leader >= 0
    )
    return leaders.most_common(1)[0][0]


def replicas_in_sync(settings: Settings, topics: list[str]) -> bool:
    metadata = cluster_metadata(settings, topics)
    return all(len(p.isrs) == 3 for t in topics for p in metadata.topics[t].partitions.values())


def offsets_report(settings: Settings) -> str:
    """Each topic's end offsets and each group's committed ones: what a failure message shows."""
    from confluent_kafka import Consumer, TopicPartition

    from testkit.harness import committed_offsets

    consumer = Consumer({**client_config(settings), "group.id": "offsets-report"})
    lines = []
    for topic in (
        settings.topic_prospects,
        settings.topic_queue_inputs,
        settings.topic_predictions,
    ):
        ends = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(settings.partitions)
        ]
        lines.append(f"{topic} ends {ends}")
    for group, topic in (
        (settings.streamer_app_id, settings.topic_prospects),
        (queue_group_id(settings), settings.topic_queue_inputs),
    ):
        lines.append(f"{group} committed {committed_offsets(settings, group, topic)}")
    consumer.close()
    return "; ".join(lines)


def check_every_event_has_one_task_id(settings: Settings, feed: Feed) -> None:
    """Every distinct event produced was scored (one or more prediction records on the queue's
    input topic, after redelivery), all with the task id derived from its event id: a repeat
    never got another. (The `predictions` log leaves out a do-not-call prospect's events.)"""
    wanted = {e["event_id"] for e in feed.sent_events}

    def scored(records: list[Record]) -> dict[str, set[str]]:
        task_ids: dict[str, set[str]] = {}
        for r in records:
            item = decode_input(r.key, r.value, r.headers.get(KIND_HEADER), r.partition, 0)
            if item.kind == "scored" and item.prediction is not None:
                task_ids.setdefault(item.prediction.event_id, set()).add(item.prediction.task_id)
        return task_ids

    records = read_topics(
        settings,
        [settings.topic_queue_inputs],
        done=lambda rs: set(scored(rs)) >= wanted,
        timeout=120,
    )
    task_ids = scored(records)
    missing = wanted - set(task_ids)
    assert not missing, f"{len(missing)} events never scored: {offsets_report(settings)}"
    assert all(ids == {task_id_for(e)} for e, ids in task_ids.items())


def check_queue(settings: Settings, feed: Feed, dump: Path) -> None:
    """check_against_reference; on a difference, every record of the queue's topics is written
    to `dump` (JSON lines) for the reader of the failure."""
    try:
        check_against_reference(settings, feed.produced, every_rule=False)
    except AssertionError:
        topics = [settings.topic_queue_inputs, settings.topic_queue, settings.topic_queue_state]
        with dump.open("w") as out:
            for r in read_topics(settings, topics, timeout=60):
                headers = {k: v.decode() for k, v in r.headers.items()}
                where = {"topic": r.topic, "partition": r.partition, "offset": r.offset}
                body = {"key": (r.key or b"").decode(), "value": (r.value or b"").decode()}
                out.write(json.dumps({**where, **body, "headers": headers}) + "\n")
        raise


def check_monitor_joined_every_outcome(
    settings: Settings, monitor: MonitorWorker, feed: Feed
) -> None:
    """Every outcome whose task has a line in the prediction log is joined to it by the
    monitor; only the others (a do-not-call prospect's events have no line) wait."""
    logged = {
        json.loads(r.value or b"{}")["task_id"]
        for r in read_topics(settings, [settings.topic_predictions], timeout=60)
    }
    joinable = sum(1 for task_id in feed.sent_outcomes if task_id in logged)

    def joined() -> bool:
        return (
            monitor.metric("callscore_outcomes_matched_total") >= joinable
            and monitor.metric("callscore_outcomes_waiting") == len(feed.sent_outcomes) - joinable
        )

    try:
        monitor.wait_until(joined, 120, f"the monitor joining all {joinable} joinable outcomes")
    except AssertionError as failed:
        names = ("consumed_total", "matched_total", "unmatched_total", "waiting", "expired_total")
        counts = {n: monitor.metric(f"callscore_outcomes_{n}") for n in names}
        raise AssertionError(f"{failed}; sent {len(feed.sent_outcomes)}: {counts}") from None
    assert monitor.metric("callscore_outcomes_consumed_total") >= len(feed.sent_outcomes)
    assert monitor.metric("callscore_outcomes_dead_lettered_total") == 0


def test_a_three_broker_cluster_loses_one_broker_then_two(cluster, tmp_path, workers):
    base = isolated_settings(
        "cluster", tmp_path, **cluster.client_settings(), **topic_replication(3), partitions=4
    )
    settings = worker_settings(
        base, tmp_path, "scorer", monitor_http_port=free_port(), quality_min_outcomes=10
    )
    ensure_topics(settings)
    metadata = cluster_metadata(settings, topic_names(settings))
    assert len(metadata.brokers) == 3
    assert all(
        len(p.replicas) == 3
        for t in topic_names(settings)
        for p in metadata.topics[t].partitions.values()
    )
    publish_model(settings, version=1)
    scorer = workers(settings, "scorer")
    monitor = workers(settings, "monitor", MonitorWorker)
    api = workers(settings, "api", ApiWorker)
    scorer.wait_ready(90)
    api.wait_ready(90)
    monitor.wait_until(lambda: monitor.metric("callscore_online_caught_up") == 1, 90, "caught up")
    pids = {name: p.process.pid for name, p in (("s", scorer), ("m", monitor), ("a", api))}
    watched = [settings.topic_prospects, settings.topic_queue, settings.topic_queue_inputs]
    # Recent event times: the monitor joins only predictions of the last
    # monitor_window_max_age_days (60); the feed moves about 15 minutes of event time a record.
    feed = Feed(settings, seed=7, prefix="e", start=datetime.now(UTC) - timedelta(days=50))

    def check_the_phase() -> None:
        check_every_event_has_one_task_id(settings, feed)
        check_queue(settings, feed, tmp_path / "queue-records.jsonl")
        check_monitor_joined_every_outcome(settings, monitor, feed)

    # --- 1. the leader of most partitions dies mid-stream and comes back 30 s later ----------
    killed = outage(
        cluster,
        feed,
        lambda: [leading_node(settings, watched)],
        before=MID_STREAM_SECONDS,
        until=lambda: time.sleep(DOWN_SECONDS),
    )
    victim = killed[0]
    check_the_phase()
    api.wait_open_tasks(int(scorer.metric("callscore_queue_open_tasks")), 60)

    # --- 2. two of three down: writes stop, nothing is lost, nothing crashes ------------------
    deadline = time.monotonic() + 60
    while not replicas_in_sync(settings, watched):  # the restarted node caught up
        assert time.monotonic() < deadline, "replicas not back in sync after 60 s"
        time.sleep(1)
    survivor = victim  # the restarted one; the two others go
    down = [n.node_id for n in cluster.nodes if n.node_id != survivor]
    failed_checks = 'callscore_consumer_lag_checks_total{result="failed"}'
    checks_before = monitor.metric(failed_checks)
    scored_before = scorer.metric("callscore_events_scored_total")

    # aiokafka retries the scorer's sends itself (NotEnoughReplicas, then timeouts); what an
    # operator sees is the monitor's lag checks failing (with one log line) and, after that,
    # the lag it reads growing (docs/operations.md, "A consumer group falls behind"). The two
    # stay down TWO_DOWN_SECONDS and then until the monitor has counted a failed lag check (one
    # check every 5 s, a failure once its 10 s timeout passes: about 15 s).
    during: dict[str, float] = {}

    def until_a_lag_check_failed() -> None:
        time.sleep(TWO_DOWN_SECONDS)
        monitor.wait_until(
            lambda: monitor.metric(failed_checks) > checks_before,
            60,
            "a failed lag check while two of three brokers were down",
        )
        during["failed"] = monitor.metric(failed_checks) - checks_before
        during["scored"] = scorer.metric("callscore_events_scored_total") - scored_before

    outage(cluster, feed, lambda: down, before=5, until=until_a_lag_check_failed)
    check_the_phase()

    for name, process in (("s", scorer), ("m", monitor), ("a", api)):
        assert process.process.poll() is None, process.log()
        assert process.process.pid == pids[name]
    print(f"\n[cluster] killed node {victim}, then {down}; {feed.produced} records produced; "
          f"while two were down: {during['failed']:.0f} failed lag checks, {during['scored']:.0f} "
          "events scored")  # fmt: skip


def check_repeated_tasks_are_identical(settings: Settings) -> None:
    """A task id on the tier topics more than once (a redelivered or rescored event) always
    carries the same decision: same event, prospect, score, tier, expiry and predecessor."""
    decided = ("event_id", "prospect_id", "score", "priority", "expires_at", "supersedes")
    tasks = read_topics(settings, settings.task_topics.values(), timeout=60)
    seen: dict[str, tuple[Any, ...]] = {}
    for record in tasks:
        task = json.loads(record.value or b"{}")
        decision = tuple(task[name] for name in decided)
        assert seen.setdefault(task["task_id"], decision) == decision, task
    assert all(task_id_for(d[0]) == t for t, d in seen.items())


def test_scorers_scale_out_to_three_and_back_to_one_mid_stream(cluster, tmp_path, workers):
    """1 -> 3 -> 1 scorers while events, outcomes and objections stream in: partitions move
    (and the queue's partitions are rebuilt from the changelog) twice each way."""
    base = isolated_settings(
        "scaling", tmp_path, **cluster.client_settings(), **topic_replication(3), partitions=6
    )
    settings = worker_settings(base, tmp_path, "first")
    ensure_topics(settings)
    publish_model(settings, version=1)
    first = workers(settings, "first")
    first.wait_ready(90)
    feed = Feed(settings, seed=11, prefix="s", start=datetime(2026, 4, 6, tzinfo=UTC))
    feed.start()
    time.sleep(8)
    more = [workers(worker_settings(settings, tmp_path, name), name) for name in ("two", "three")]
    for worker in more:
        worker.wait_ready(90)
    first.wait_until(
        lambda: first.metric("callscore_queue_partitions") < settings.partitions,
        60,
        "the first scorer handing partitions over",
    )
    time.sleep(8)
    for worker in more:
        assert worker.stop() == 0, worker.log()  # SIGTERM, as an orchestrator scales in
    first.wait_until(
        lambda: first.metric("callscore_queue_partitions") == settings.partitions,
        60,
        "the first scorer owning every partition again",
    )
    time.sleep(5)
    feed.stop()
    check_every_event_has_one_task_id(settings, feed)
    check_queue(settings, feed, tmp_path / "queue-records.jsonl")
    check_repeated_tasks_are_identical(settings)
    assert first.process.poll() is None, first.log()
