"""Recovery of the call queue after a restart with N open tasks, on a broker of its own.

    .venv/bin/python -m bench.tools.queue_recovery [--sizes 0 100000 1000000] [--no-queue-topic]
                                                   [--broker kafka|tansu]
Prints a table and writes bench/results/queue_recovery.json.

For each N (a fresh broker each, Apache Kafka unless `--broker tansu`, so its memory is that
N's): the changelog of N open tasks is
written straight to a fresh `call-queue.state` topic (callqueue.state.ProspectEntry JSON with an
open CallTask, keyed by prospect id, at `partition_for(prospect_id)`, as the queue worker writes
it), and, unless --no-queue-topic, the same tasks to the `call-queue` topic, which `callscore
api` mirrors for GET /queue (streamer/queue_mirror.py): a restarted deployment finds both. Then

1. in process: the queue worker's own recovery of every partition (`QueueWorker._recover`:
   read_partitions to partition EOF, the newest entry per key, a PartitionQueue each) in a fresh
   process, without Faust or the mirror beside it: seconds and its peak RSS;
2. a scorer (`callscore stream`, testkit.harness.StreamWorker, the model published before it
   starts) and a `callscore api` (GET /queue's server since 7499acb) started together: from
   their start until the scorer's /readyz is ready (which waits for the queue's partitions),
   every partition's recovery as its log reports it (the entries must add up to N), the
   recovery gauge, the open-tasks gauge, until the API's GET /queue answers (its mirror read to
   the end), and the scorer's, the API's and the broker's peak RSS.

N = 0 is the baseline: what a scorer's start costs with nothing to recover.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.broker import add_broker_option, start_broker
from bench.context import publish
from bench.resources import peak_rss_mb, tree_peak_rss_mb
from bench.results import write_results
from callqueue.inputs import partition_for
from callqueue.state import ProspectEntry, entry_json
from callscore.processes import settings_env
from core.kafka import ensure_topics
from core.local_broker import BrokerKind
from core.settings import Settings
from core.topic_writer import Outgoing, TopicWriter
from schemas import PRIORITIES, CallTask, task_id_for
from streamer.queue_worker import QueueWorker, ignore_progress
from testkit.factories import small_artifact
from testkit.harness import ApiWorker, StreamWorker, isolated_settings, worker_settings

DEFAULT_SIZES = (0, 100_000, 1_000_000)
BASE = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(days=14)
READY_TIMEOUT_SECONDS = 1_800.0
LARGE_BATCHES = {"linger.ms": 100, "batch.size": 1_000_000}
# The lines streamer/queue_worker.py logs once per rebuilt partition and once per assignment.
RECOVERED = re.compile(
    r"call queue partition (\d+): (\d+) entries \((\d+) open tasks\) from (\d+) changelog "
    r"records"
)
REBUILT = re.compile(r"call queue: partitions \[[\d, ]*\] rebuilt in ([\d.]+) s")


def entries(count: int) -> Iterator[ProspectEntry]:
    """`count` prospects with one open task each, events one millisecond apart (none expired)."""
    for i in range(count):
        event_id = str(uuid.uuid4())
        at = BASE + timedelta(milliseconds=i)
        score = (i * 7919 % 10_000) / 10_000
        task = CallTask(
            task_id=task_id_for(event_id),
            event_id=event_id,
            prospect_id=f"cust-{i}",
            score=score,
            priority=PRIORITIES[i % len(PRIORITIES)],
            percentile=round(score * 100, 2),
            model_version=1,
            scored_at=BASE,
            expires_at=at + TTL,
        )
        yield ProspectEntry(
            prospect_id=task.prospect_id,
            open_task=task,
            newest_event_at=at,
            newest_event_id=event_id,
            newest_seen_at=at,
        )


def open_task_records(settings: Settings, count: int, queue_topic: bool) -> list[Outgoing]:
    records = []
    for entry in entries(count):
        assert entry.open_task is not None
        key = entry.prospect_id.encode()
        partition = partition_for(entry.prospect_id, settings.partitions)
        value = entry_json(entry)
        records.append(Outgoing(settings.topic_queue_state, key, value, partition=partition))
        if queue_topic:
            task = entry.open_task.model_dump_json().encode()
            headers = [("task_id", entry.open_task.task_id.encode())]
            records.append(Outgoing(settings.topic_queue, key, task, headers, partition))
    return records


def write_open_tasks(settings: Settings, count: int, queue_topic: bool) -> float:
    """The changelog (and the queue topic) of `count` open tasks, made first, then produced in
    one burst, so they land in large record batches; the seconds the produce took.

    Large batches on purpose: Tansu's fetch slows down past a few thousand record batches in a
    partition (bench/README.md, "Call queue"), which would measure the broker, not recovery. Apache
    Kafka takes them as they are (a batch stays under its default 1 MiB message.max.bytes)."""
    records = open_task_records(settings, count, queue_topic)
    started = time.monotonic()
    with TopicWriter(settings, "the bench's call-queue changelog", **LARGE_BATCHES) as writer:
        for record in records:
            writer.send(record)
    return round(time.monotonic() - started, 1)


def recover_here() -> dict[str, Any]:
    """In this process, configured by the environment: every partition rebuilt by the queue
    worker's own recovery, side by side as `QueueWorker._take_over` does."""
    settings = Settings(_env_file=None)
    worker = QueueWorker(settings, ignore_progress)
    started = time.monotonic()
    queues = worker._recover(range(settings.partitions))  # the product's recovery, alone
    seconds = time.monotonic() - started
    return {
        "seconds": round(seconds, 2),
        "entries": sum(len(q.entries) for q in queues.values()),
        "partitions": [
            {"partition": p, "entries": len(q.entries), "open_tasks": sum(q.open_by_tier.values())}
            for p, q in queues.items()
        ],
        "peak_rss_mb": peak_rss_mb(os.getpid()),
    }


def recover_in_fresh_process(settings: Settings) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.tools.queue_recovery", "--recover-here"]
    done = subprocess.run(
        argv, env=settings_env(settings), check=True, capture_output=True, text=True
    )
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return found


def restart(settings: Settings, workdir: Path, count: int) -> dict[str, Any]:
    """A scorer and a `callscore api` (which serves GET /queue from its mirror of the call-queue
    topic since 7499acb) started together on the written topics: until the scorer is ready, the
    recovery its log reports, until the API's GET /queue answers; their peak RSS."""
    configured = worker_settings(settings, workdir, f"recovery-{count}")
    started = time.monotonic()
    worker = StreamWorker(configured, workdir / f"recovery-{count}.log")
    api = ApiWorker(configured, workdir / f"recovery-{count}-api.log")
    try:
        worker.wait_ready(READY_TIMEOUT_SECONDS)
        ready = time.monotonic() - started
        log_text = worker.log_path.read_text()
        recovered = [m.groups() for m in RECOVERED.finditer(log_text)]
        rebuilt = [float(m.group(1)) for m in REBUILT.finditer(log_text)]
        answered = api.http("GET", "/queue?limit=1", token=api.token)
        api.wait_until(
            lambda: api.http("GET", "/queue?limit=1", token=api.token).status == 200,
            READY_TIMEOUT_SECONDS,
            "GET /queue answered",
        )
        queue_answers = time.monotonic() - started
        body = api.http("GET", "/queue?limit=1", token=api.token).body or {}
        return {
            "ready_seconds": round(ready, 1),
            "queue_answers_seconds": round(queue_answers, 1),
            "queue_answered_before_ready": answered.status == 200,
            "partitions_logged": len(recovered),
            "entries_logged": sum(int(g[1]) for g in recovered),
            "open_tasks_logged": sum(int(g[2]) for g in recovered),
            "recovery_seconds_logged": round(sum(rebuilt), 2),
            "recovery_gauge_seconds": round(worker.metric("callscore_queue_recovery_seconds"), 2),
            "open_tasks_gauge": int(worker.metric("callscore_queue_open_tasks")),
            "mirror_open_total": body.get("open_total"),
            "worker_peak_rss_mb": tree_peak_rss_mb(worker.process.pid),
            "api_peak_rss_mb": tree_peak_rss_mb(api.process.pid),
        }
    finally:
        api.stop()
        worker.stop()


def measure(count: int, queue_topic: bool, kind: BrokerKind = "kafka") -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="callscore-queue-recovery-"))
    broker = start_broker(kind, log_dir=str(workdir))
    try:
        assert broker.process is not None
        name = f"recovery-{count}-{uuid.uuid4().hex[:6]}"
        settings = isolated_settings(name, workdir, **broker.client_settings())
        ensure_topics(settings)
        publish(settings, small_artifact(1))  # /readyz waits for a model too
        written = write_open_tasks(settings, count, queue_topic)
        broker_after_write = peak_rss_mb(broker.process.pid)
        print(f"{count}: written in {written} s", file=sys.stderr, flush=True)
        alone = recover_in_fresh_process(settings)
        print(f"{count}: in process {alone['seconds']} s", file=sys.stderr, flush=True)
        scorer = restart(settings, workdir, count)
        if scorer["entries_logged"] != count or scorer["partitions_logged"] != settings.partitions:
            raise RuntimeError(f"{count} open tasks written, the scorer's log says {scorer}")
        if alone["entries"] != count:
            raise RuntimeError(f"{count} open tasks written, {alone['entries']} recovered")
        return {
            "broker": broker.origin,
            "open_tasks": count,
            "partitions": settings.partitions,
            "queue_topic_written": queue_topic,
            "write_seconds": written,
            "in_process_recovery_seconds": alone["seconds"],
            "in_process_peak_rss_mb": alone["peak_rss_mb"],
            **scorer,
            "broker_peak_rss_mb_after_write": broker_after_write,
            "broker_peak_rss_mb": peak_rss_mb(broker.process.pid),
        }
    finally:
        broker.stop()


SHOWN = (
    "open_tasks",
    "write_seconds",
    "in_process_recovery_seconds",
    "in_process_peak_rss_mb",
    "ready_seconds",
    "recovery_seconds_logged",
    "queue_answers_seconds",
    "entries_logged",
    "worker_peak_rss_mb",
    "broker_peak_rss_mb",
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.queue_recovery")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES))
    parser.add_argument(
        "--no-queue-topic", action="store_true", help="write the changelog only, not call-queue"
    )
    add_broker_option(parser)
    parser.add_argument("--recover-here", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recover_here:  # the in-process measurement, in a fresh process, for the parent
        print(json.dumps(recover_here()))
        return
    rows = []
    for count in args.sizes:
        rows.append(measure(count, not args.no_queue_topic, args.broker))
        print(rows[-1], file=sys.stderr, flush=True)
    table = Table(title="call queue recovery after a restart (one scorer, every partition)")
    for column in SHOWN:
        table.add_column(column.replace("_", " "), justify="right")
    for row in rows:
        table.add_row(*(f"{row[c]:,}" if row[c] is not None else "—" for c in SHOWN))
    Console(width=180).print(table)
    print(write_results("queue_recovery", rows))


if __name__ == "__main__":
    main()
