"""Memory per open task of the call queue (callqueue.rules.PartitionQueue), in process, no broker.

    .venv/bin/python -m bench.tools.queue_memory [--sizes 100000 1000000] [--methods traced rss]
Prints a table and writes bench/results/queue_memory.json.

A partition's queue is filled with N open tasks: scored inputs of N distinct prospects, each
decoded from the bytes the scorer writes to the input topic (`decode_input`, as the queue
worker does), applied in batches of Settings.batch_max_size; the records each batch returns
are dropped (published, in the worker). Beside it, the records of the call-queue topic go to a
`callqueue.view.QueueView`, the mirror every scorer also keeps of the whole deployment's queue
(GET /queue).

The inputs' bytes are made before measuring. Each size is measured in a fresh process twice:
once with tracemalloc (the bytes the queue and the view keep alive, exactly) and once without
(the growth of VmRSS, what the process shows, with the allocator's slack and the freed batches'
arenas). The ids are those of the bench's payloads and the simulator: `cust-<i>` prospects,
uuid4 event ids, uuid5 task ids.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.results import write_results
from callqueue.inputs import decode_input
from callqueue.rules import PartitionQueue, QueuePolicy, QueueTopics
from callqueue.view import QueueView
from core.settings import Settings
from schemas import FEATURES, PRIORITIES, task_id_for
from testkit.factories import valid_event

DEFAULT_SIZES = (100_000, 1_000_000)
BASE = datetime(2026, 1, 1, tzinfo=UTC)
PARTITION = 0
METHODS = ("traced", "rss")


def scored_value(i: int, features: dict[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) of the scored input of prospect i, as the scorer writes it (a prediction-log
    line); one millisecond apart, so the stream time stays far within the task TTL."""
    event_id = str(uuid.uuid4())
    prospect_id = f"cust-{i}"
    score = (i * 7919 % 10_000) / 10_000
    record = {
        "event_id": event_id,
        "task_id": task_id_for(event_id),
        "prospect_id": prospect_id,
        "occurred_at": (BASE + timedelta(milliseconds=i)).isoformat(),
        "features": features,
        "score": score,
        "priority": PRIORITIES[i % len(PRIORITIES)],
        "percentile": round(score * 100, 2),
        "model_version": 1,
        "scored_at": BASE.isoformat(),
    }
    return prospect_id.encode(), json.dumps(record).encode()


def scored_values(size: int) -> list[tuple[bytes, bytes]]:
    features = {name: valid_event()[name] for name in FEATURES}
    return [scored_value(i, features) for i in range(size)]


def fill(values: list[tuple[bytes, bytes]], with_view: bool) -> dict[str, Any]:
    """Build the queue (and the view) from these inputs: the objects that keep them alive."""
    settings = Settings(_env_file=None)
    topics = QueueTopics.of(settings)
    size = len(values)
    queue = PartitionQueue(PARTITION, topics, QueuePolicy.of(settings))
    view = QueueView() if with_view else None
    changelog_bytes = 0
    started = time.monotonic()
    for first in range(0, size, settings.batch_max_size):
        inputs = []
        for i in range(first, min(first + settings.batch_max_size, size)):
            key, value = values[i]
            inputs.append(decode_input(key, value, b"scored", PARTITION, i))
        result = queue.apply(inputs)
        for record in result.outgoing:
            if record.topic == topics.state:
                changelog_bytes += len(record.value or b"")
            elif record.topic == topics.queue and view is not None:
                view.apply(record.key, record.value, dict(record.headers))
    seconds = time.monotonic() - started
    open_tasks = sum(queue.open_by_tier.values())
    if open_tasks != size:
        raise RuntimeError(f"{open_tasks} open tasks after {size} distinct prospects")
    if view is not None and sum(view.open_by_tier().values()) != size:
        raise RuntimeError("the view does not hold every open task")
    return {
        "keep": (queue, view),
        "fill_seconds": round(seconds, 1),
        "changelog_bytes_per_entry": round(changelog_bytes / size),
    }


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(size: int, method: str, with_view: bool) -> dict[str, Any]:
    """One measurement in this process: method `traced` (tracemalloc) or `rss` (VmRSS). The
    inputs are made before it starts (not kept by the queue: it decodes its own copies)."""
    values = scored_values(size)
    gc.collect()
    if method == "traced":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = rss_bytes()
    filled = fill(values, with_view)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if method == "traced" else rss_bytes()
    if method == "traced":
        tracemalloc.stop()
    held = after - before
    return {
        "open_tasks": size,
        "kept": "queue + view" if with_view else "queue",
        "method": method,
        "mib": round(held / 2**20, 1),
        "bytes_per_open_task": round(held / size),
        "fill_seconds": filled["fill_seconds"],
        "changelog_bytes_per_entry": filled["changelog_bytes_per_entry"],
    }


def in_fresh_process(size: int, method: str, with_view: bool) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.tools.queue_memory", "--one", str(size), method]
    if with_view:
        argv.append("--view")
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    row: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.queue_memory")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        help="tracemalloc is exact but slows filling about 2.5x",
    )
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--view", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a measurement in this (fresh) process, printed for the parent
        size, method = int(args.one[0]), args.one[1]
        print(json.dumps(measure(size, method, args.view)))
        return
    rows = []
    for size in args.sizes:
        for with_view in (False, True):
            for method in args.methods:
                rows.append(in_fresh_process(size, method, with_view))
                print(rows[-1], file=sys.stderr, flush=True)
    table = Table(title="call queue memory per open task (PartitionQueue; + QueueView, the mirror)")
    for column in rows[0]:
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int | float) else str(v) for v in row.values()))
    Console(width=160).print(table)
    print(write_results("queue_memory", rows))


if __name__ == "__main__":
    main()
