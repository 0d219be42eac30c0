"""Compaction for real, on Apache Kafka: the log cleaner compacts the call queue, its changelog,
the do-not-call list and the model topic, and everything that reads them still holds.

The topics get the settings `callscore topics` gives them (core/kafka.py::topic_specs), then
compaction timing squeezed from hours and days into seconds (AGGRESSIVE), and the broker's
cleaner looks for work every CLEANER_BACKOFF_MS instead of every 15 s. Kafka never cleans a
partition's active segment, and a segment only rolls when a record arrives SEGMENT_MS after its
first one: the tests therefore write in bursts at least that far apart. A tombstone outlives its
first cleaning by delete.retention.ms and is removed by a later cleaning, which again needs a
rolled segment of new records.

What a test reads of a topic is counted against the partitions' high watermarks, which count
every record ever written (compaction keeps offsets): fewer records read than written, with
gaps in the offsets, is what the cleaner removed.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callqueue.rules import QueuePolicy
from core.kafka import consumer_config, ensure_topics
from core.local_broker import LocalBroker
from core.settings import Settings
from core.topic_reader import Record, read_topics
from registry.artifact import dump_artifact
from registry.keys import load_signing_key, trusted_keys
from registry.model_topic import (
    current_manifest,
    next_version,
    promote,
    read_model_records,
    version_rows,
)
from registry.signing import build_manifest, sign_manifest
from registry.trust import (
    ManifestRecord,
    ModelTrust,
    parse_record,
    signed_manifests,
    trusted_manifests,
)
from schemas import ModelManifest
from streamer.metrics import StreamMetrics
from streamer.model_watcher import ModelWatcher
from testkit.factories import small_artifact, valid_event
from testkit.harness import event_bytes, produce, publish_model, worker_settings
from testkit.queue_reference import OpenTask, Withdrawn, queue_state_of, reference_deployment
from tests.test_call_queue import (
    inputs_applied,
    mixed_stream,
    outcomes_and_objections,
    reference_inputs,
)

SEGMENT_MS = 1000
DELETE_RETENTION_MS = 4000
CLEANER_BACKOFF_MS = 250
AGGRESSIVE = {
    "segment.ms": str(SEGMENT_MS),
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": str(DELETE_RETENTION_MS),
}
BURST_GAP_SECONDS = SEGMENT_MS / 1000 + 0.3  # the next burst rolls the previous one's segment
WAIT_SECONDS = 120


@pytest.fixture(scope="module")
def fast_cleaner(kafka_broker: LocalBroker) -> Iterator[None]:
    """The broker's cleaner backs off CLEANER_BACKOFF_MS when it finds nothing to clean (15 s
    by default: a dynamic broker setting, set on every broker of the session and restored)."""
    if kafka_broker.kind != "kafka":
        pytest.skip("Tansu accepts cleanup.policy=compact but never compacts")
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    brokers = list(admin.list_topics(timeout=15).brokers)

    def alter(operation: Any, value: str | None) -> None:
        resources = [
            ConfigResource(
                ResourceType.BROKER,
                str(broker),
                incremental_configs=[
                    ConfigEntry("log.cleaner.backoff.ms", value, incremental_operation=operation)
                ],
            )
            for broker in brokers
        ]
        for future in admin.incremental_alter_configs(resources).values():
            future.result(timeout=15)

    alter(AlterConfigOpType.SET, str(CLEANER_BACKOFF_MS))
    yield
    alter(AlterConfigOpType.DELETE, None)


def compact_aggressively(settings: Settings, topics: list[str]) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    entries = [
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
        for key, value in AGGRESSIVE.items()
    ]
    resources = [
        ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries) for topic in topics
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=15)


def written_by_partition(settings: Settings, topic: str) -> dict[int, int]:
    """Records ever written to each partition: its high watermark (nothing is deleted by time on
    a compacted topic, so every low watermark is 0)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(consumer_config(settings, f"callscore-watermarks-{uuid.uuid4()}"))
    try:
        ends = {}
        for partition in consumer.list_topics(topic, timeout=15).topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)
            assert low == 0, f"{topic}[{partition}] starts at {low}: records deleted by time"
            ends[partition] = high
        return ends
    finally:
        consumer.close()


def written(settings: Settings, topic: str) -> int:
    return sum(written_by_partition(settings, topic).values())


@dataclass
class TopicLog:
    """What the test read of one compacted topic, read after read from its beginning: the
    newest record per key it ever saw, and the counts of the last read."""

    settings: Settings
    topic: str
    newest: dict[bytes, Record] = field(default_factory=dict)
    tombstones_seen: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset)
    last: list[Record] = field(default_factory=list)
    read_at_ms: int = 0

    def read(self) -> list[Record]:
        self.read_at_ms = int(time.time() * 1000)
        self.last = sorted(
            read_topics(self.settings, [self.topic], timeout=30),
            key=lambda r: (r.partition, r.offset),
        )
        for record in self.last:
            assert record.key is not None
            seen = self.newest.get(record.key)
            if seen is None or seen.offset < record.offset:
                self.newest[record.key] = record
            if record.value is None:
                self.tombstones_seen.add((record.partition, record.offset))
        return self.last

    def figures(self) -> dict[str, int]:
        """Records written and read now; tombstones ever seen, still there, and those the
        cleaner removed after delete.retention.ms (their key gone from the topic)."""
        return {
            "written": written(self.settings, self.topic),
            "read": len(self.last),
            "tombstones_seen": len(self.tombstones_seen),
            "tombstones_now": sum(r.value is None for r in self.last),
            "keys_gone_with_their_tombstone": len(self.vanished()),
        }

    def vanished(self) -> list[bytes]:
        """Keys whose newest record was a tombstone and which are no longer in the topic: the
        cleaner removed the tombstone after delete.retention.ms."""
        present = {r.key for r in self.last}
        return [k for k, r in self.newest.items() if r.value is None and k not in present]


def queue_matches_reference(settings: Settings, produced: int, queue: TopicLog) -> dict[str, Any]:
    """Once the queue's group committed every input, `call-queue` against the reference model
    run over the (uncompacted) input topic, key by key. Returns the reference's final state.

    Open tasks must be equal exactly. A withdrawn prospect may also be absent: once the cleaner
    has removed its tombstone (delete.retention.ms after it first cleaned the segment holding
    it), a reader of the topic from its beginning no longer learns that the task was withdrawn;
    it never sees the prospect at all, which for a fresh reader is the same queue. Not for a
    reader that read the open task earlier and reaches the tombstone's offset only after the
    cleaner removed it: a dialer mirroring the topic that was down longer than that, or a rebuild
    from the beginning slower than that (it read the task record before the cleaner dropped it),
    keeps a withdrawn task open for good. That is why delete.retention.ms
    (CALLSCORE_TOMBSTONE_RETENTION_DAYS) must exceed the longest any reader of a compacted topic
    may take to catch up or to rebuild. Absence is therefore accepted only where the test saw
    the withdrawal's tombstone (the same task, the same reason) and it was written more than
    delete.retention.ms before this read.
    """
    deadline = time.monotonic() + WAIT_SECONDS
    while not inputs_applied(settings, produced):
        assert time.monotonic() < deadline, (
            f"the queue did not apply every input in {WAIT_SECONDS} s"
        )
        time.sleep(0.5)
    policy = QueuePolicy.of(settings)
    expected = reference_deployment(
        reference_inputs(settings),
        policy.task_ttl,
        policy.recontact_after,
        settings.partitions,
        policy.forget_after,
    )
    got = queue_state_of((r.key, r.value, list(r.headers.items())) for r in queue.read())
    assert set(got) <= set(expected.final)
    for prospect_id, state in expected.final.items():
        if prospect_id in got:
            assert got[prospect_id] == state, prospect_id
            continue
        assert isinstance(state, Withdrawn), f"{prospect_id}'s open task is missing"
        tombstone = queue.newest.get(prospect_id.encode())
        assert tombstone is not None and tombstone.value is None, prospect_id
        assert queue_state_of([(tombstone.key, None, list(tombstone.headers.items()))]) == {
            prospect_id: state
        }
        assert tombstone.timestamp_ms < queue.read_at_ms - DELETE_RETENTION_MS, prospect_id
    return expected.final


def per_partition(log: TopicLog) -> dict[int, tuple[int, int]]:
    """Per partition: (records read, records written), after a fresh read."""
    from collections import Counter

    kept = Counter(r.partition for r in log.read())
    ends = written_by_partition(log.settings, log.topic)
    return {p: (kept[p], end) for p, end in ends.items()}


def open_tasks(final: dict[str, Any]) -> int:
    return sum(isinstance(state, OpenTask) for state in final.values())


def rebuilt_from(log: str) -> tuple[int, int]:
    """(open tasks, changelog records read) of a queue worker's rebuild of every partition, from
    its log lines (each partition's last rebuild)."""
    pattern = r"partition (\d+): \d+ entries \((\d+) open tasks\) from (\d+) changelog records"
    last = {int(p): (int(o), int(r)) for p, o, r in re.findall(pattern, log)}
    return sum(o for o, _r in last.values()), sum(r for _o, r in last.values())


def burst(settings: Settings, produced: int, records: Callable[[], int]) -> int:
    """Produce a burst, wait until the queue applied it and for SEGMENT_MS more (so that the next
    burst rolls this one's segments); the number of inputs produced so far."""
    produced += records()
    deadline = time.monotonic() + WAIT_SECONDS
    while not inputs_applied(settings, produced):
        assert time.monotonic() < deadline, f"a burst was not applied in {WAIT_SECONDS} s"
        time.sleep(0.3)
    time.sleep(BURST_GAP_SECONDS)
    return produced


@pytest.mark.slow
def test_the_cleaner_compacts_the_queue_and_a_scorer_rebuilt_from_it_equals_the_reference(
    kafka_settings, tmp_path, workers, fast_cleaner
):
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    changing = [settings.topic_queue, settings.topic_queue_state, settings.topic_do_not_call]
    compact_aggressively(settings, changing)
    publish_model(settings, version=1)
    queue, state, objections = (TopicLog(settings, topic) for topic in changing)

    start = datetime(2026, 1, 5, tzinfo=UTC)
    first = mixed_stream(21, start, 30, "a")
    outcomes, entries = outcomes_and_objections(23, first, start + timedelta(days=20))
    # The second stream: P0..P11 again (against their rebuilt entries) and new prospects
    # Q12..Q23; P12..P23 never again, so their last withdrawals stay the newest records of their
    # keys until the cleaner removes the tombstones.
    second = [
        {
            **e,
            "prospect_id": e["prospect_id"].replace("P", "Q")
            if int(e["prospect_id"][1:]) >= 12
            else e["prospect_id"],
        }
        for e in mixed_stream(22, start + timedelta(days=30), 30, "b")
    ]
    strangers = iter(range(10_000))

    def send(records: list[tuple[bytes, bytes | None]], topic: str | None = None, **kw: Any):
        return lambda: produce(settings, records, topic, **kw)

    def more(events: list[dict[str, Any]], new_prospects: int = 0) -> Callable[[], int]:
        """Events, events of new prospects, and objections of prospects that never had a task
        (they write the do-not-call list and the changelog only): every topic gets records."""
        at = start + timedelta(days=59)
        ids = [next(strangers) for _ in range(4)]
        objecting = [
            (
                f"X{i}".encode(),
                json.dumps({"prospect_id": f"X{i}", "requested_at": at.isoformat()}).encode(),
            )
            for i in ids
        ]
        new = [
            valid_event(event_id=f"n-{i}", prospect_id=f"N{i}", occurred_at=at.isoformat())
            for i in ids[:new_prospects]
        ]
        return lambda: (
            produce(settings, [event_bytes(e) for e in events + new], partitioner="murmur2_random")
            + produce(settings, objecting, settings.topic_do_not_call)
        )

    # --- the first scorer: the first stream in bursts, a segment apart -------------------------
    before = workers(settings, "before")
    before.wait_ready()
    half = len(first) // 2
    produced = 0
    for records in [
        send([event_bytes(e) for e in first[:half]]),
        send([event_bytes(e) for e in first[half:]], partitioner="murmur2_random"),
        send(outcomes, settings.topic_outcomes, partitioner="murmur2_random"),
        send(entries[:-1], settings.topic_do_not_call),
        send(entries[-1:], settings.topic_do_not_call),  # the lift: a tombstone
    ]:
        produced = burst(settings, produced, records)
        final = queue_matches_reference(settings, produced, queue)  # sees every tombstone
        objections.read()
    opened = open_tasks(final)
    before.wait_until(
        lambda: before.metric("callscore_queue_open_tasks") == opened, 30, "the open tasks"
    )
    assert before.stop() == 0  # SIGTERM

    # --- the cleaner ran on every partition of the queue and its changelog ---------------------
    for log in (queue, state):
        deadline = time.monotonic() + WAIT_SECONDS
        while not all(kept < total for kept, total in per_partition(log).values()):
            assert time.monotonic() < deadline, f"{log.topic} was not compacted"
            time.sleep(0.5)
    state_written = written(settings, settings.topic_queue_state)
    state_kept = len(state.last)

    # --- a new scorer, same app id: every partition rebuilt from the compacted changelog -------
    after = workers(settings, "after")
    after.wait_ready()
    after.wait_until(
        lambda: after.metric("callscore_queue_open_tasks") == opened,
        WAIT_SECONDS,
        f"{opened} open tasks rebuilt",
    )
    rebuilt_open, rebuilt_read = rebuilt_from(after.child.log_text())
    assert rebuilt_open == opened
    assert rebuilt_read <= state_kept < state_written
    assert after.metric("callscore_queue_inputs_total") == 0  # rebuilt, not applied again

    # --- the second stream, in bursts a segment apart ------------------------------------------
    chunks = 6
    size = -(-len(second) // chunks)
    for i in range(chunks):
        produced = burst(settings, produced, more(second[i * size : (i + 1) * size]))
        queue_matches_reference(settings, produced, queue)
        objections.read()
    # Bursts of new prospects and objections until the cleaner removed the lift's tombstone and
    # a withdrawal's (delete.retention.ms after it first cleaned them, on its next run).
    lifted = entries[-1][0]
    deadline = time.monotonic() + WAIT_SECONDS
    while not queue.vanished() or lifted not in objections.vanished():
        assert time.monotonic() < deadline, "tombstones not removed"
        produced = burst(settings, produced, more([], new_prospects=4))
        queue_matches_reference(settings, produced, queue)
        objections.read()
    assert queue.vanished() and lifted in objections.vanished()
    final = queue_matches_reference(settings, produced, queue)
    state.read()
    after.wait_until(
        lambda: after.metric("callscore_queue_open_tasks") == open_tasks(final),
        30,
        "the open tasks",
    )

    figures = {log.topic: log.figures() for log in (queue, state, objections)}
    print(
        f"\nrebuild: {rebuilt_read} changelog records read ({state_written} written), "
        f"{rebuilt_open} open tasks; {open_tasks(final)} open at the end; withdrawn prospects "
        f"absent at the end: {sorted(k.decode() for k in queue.vanished())}"
    )
    for topic, numbers in figures.items():
        print(f"{topic}: {numbers}")
        assert numbers["read"] < numbers["written"], topic
    # The changelog's tombstones are the entries the queue forgot (the streams span 60 days of
    # event time, CALLSCORE_QUEUE_FORGET_AFTER_DAYS is 30): closed prospects only, none with an
    # open task, and the queue equalled the reference model, which forgets nothing, throughout.
    forgotten = {r.key.decode() for r in state.newest.values() if r.value is None and r.key}
    assert not [p for p in forgotten if isinstance(final.get(p), OpenTask)]


def test_compaction_keeps_every_model_version_and_a_replay_stays_refused(
    kafka_settings, fast_cleaner
):
    """v1..v3, a rollback to v2, and the v1 record produced again with its own key (a replay):
    after compaction every version is still a rollback target and the replay still refused.

    The cleaner keeps the replay, not the original (the newest record of the key), and the trust
    rule refuses it as a replay (sequence 1 after 3 and 4). Until issue 30 the registry read the
    versions from the trusted records only: v1 vanished from `callscore models list` and
    `callscore models promote 1` answered "no version 1"; it now reads them from every signed
    record (registry.trust.signed_manifests), while only trusted ones can become current."""
    settings = kafka_settings
    keys = trusted_keys(settings)
    ensure_topics(settings)
    compact_aggressively(settings, [settings.topic_models])
    for version in (1, 2, 3):
        publish_model(settings, version=version, seed=version)
    promote(settings, 2)  # the v2 key's second record: its first is now superseded
    v1_original = read_topics(settings, [settings.topic_models], timeout=15)[0]
    assert v1_original.key == b"term-deposit/v1"
    # The replay: the signed v1 record as it was, keyed as it was. Compaction keeps the newest
    # record per key, so once the cleaner runs the replay is all that is left of v1.
    produce(settings, [(v1_original.key, v1_original.value)], settings.topic_models)
    uncompacted = [parse_record(r) for r in read_topics(settings, [settings.topic_models])]
    trust = ModelTrust(keys, settings.model_name)
    assert [(v.reason, v.version) for v in map(trust.check, uncompacted)] == [
        ("verified", 1),
        ("verified", 2),
        ("verified", 3),
        ("verified", 2),
        ("replay", 1),
    ]
    time.sleep(BURST_GAP_SECONDS)
    publish_model(settings, version=4, seed=4)  # rolls the segment: the cleaner may take it

    deadline = time.monotonic() + WAIT_SECONDS
    while (records := read_topics(settings, [settings.topic_models], timeout=15))[0].offset == 0:
        assert time.monotonic() < deadline, "the model topic was not compacted"
        time.sleep(0.5)
    print(
        f"\nmodel topic: {written(settings, settings.topic_models)} written, {len(records)} kept:"
    )
    for record in records:
        manifest = ModelManifest.model_validate_json(record.value or b"")
        print(f"  offset {record.offset} {record.key!r}: sequence {manifest.sequence}")
    assert [(r.offset, r.key) for r in records] == [
        (2, b"term-deposit/v3"),
        (3, b"term-deposit/v2"),
        (4, b"term-deposit/v1"),  # the replay, in the original's place
        (5, b"term-deposit/v4"),
    ]
    assert records[2].value == v1_original.value

    parsed = [parse_record(r) for r in records]
    trust = ModelTrust(keys, settings.model_name)
    verdicts = [(v.result, v.reason, v.version) for v in map(trust.check, parsed)]
    assert verdicts[2] == ("rejected", "replay", 1)  # sequence 1 after 3 and 4
    # Every version is still a rollback target: listed, promotable, and numbered past.
    assert sorted(m.version for m in signed_manifests(parsed, settings.model_name, keys)) == [
        1,
        2,
        3,
        4,
    ]
    assert [row["version"] for row in version_rows(parsed, settings)] == [4, 3, 2, 1]
    assert next_version(parsed, settings.model_name, keys) == 5
    current = current_manifest(parsed, settings.model_name, keys)
    assert current is not None and current.version == 4  # the replay never becomes current
    assert [m.version for m in trusted_manifests(parsed, settings.model_name, keys)] == [3, 2, 4]
    # The scorer's watcher on the compacted topic: serves v4, refuses the replay.
    metrics = StreamMetrics()
    watcher = ModelWatcher(settings, metrics)
    watcher.step(parsed, at_end=True)
    assert watcher.current is not None and watcher.current.version == 4
    assert metrics.reloads.labels("rejected", "replay")._value.get() == 1
    # A rollback to v1 from its surviving (replayed) record: a new record, signed anew.
    rolled_back = promote(settings, 1)
    assert (rolled_back.version, rolled_back.sequence) == (1, 6)
    now = read_model_records(settings)
    current = current_manifest(now, settings.model_name, keys)
    assert current is not None and (current.version, current.action) == (1, "promote")


def test_a_version_whose_only_record_left_is_a_replay_keeps_its_number(settings):
    """v1..v3, a rollback to v2 (sequence 4), then v3's record produced again with its key: once
    the cleaner ran, the replay is v3's only record. It is refused as a candidate, but v3 is
    listed and the next trained model is v4, not a second, different v3."""

    def signed(version: int, sequence: int, action: str = "publish") -> ModelManifest:
        artifact = small_artifact(version, seed=version)
        manifest = build_manifest(dump_artifact(artifact), artifact.metadata, settings, sequence)
        changed = manifest.model_copy(update={"action": action})
        return sign_manifest(changed, *load_signing_key(settings))

    left = [signed(1, 1), signed(2, 4, "promote"), signed(3, 3)]  # what the cleaner keeps
    records = [ManifestRecord(offset, manifest) for offset, manifest in enumerate(left)]
    keys = trusted_keys(settings)
    assert [m.version for m in trusted_manifests(records, settings.model_name, keys)] == [1, 2]
    assert next_version(records, settings.model_name, keys) == 4
    assert [row["version"] for row in version_rows(records, settings)] == [3, 2, 1]
    current = current_manifest(records, settings.model_name, keys)
    assert current is not None and (current.version, current.sequence) == (2, 4)
