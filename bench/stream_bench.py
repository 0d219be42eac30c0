"""Scorer benchmark: throughput and end-to-end latency against a fresh local Tansu broker.

Runs `callscore stream` as a subprocess (as in production) and measures
- latency at a steady 500 events/s: Kafka timestamp of the prospect event (set by the producer)
  to the Kafka timestamp of its call task (set by the scorer's producer when sending);
- throughput: a backlog of events produced as fast as possible, events/s from the first event's
  timestamp to the last task's timestamp.
Prints a table and writes JSON to bench/results/stream_bench.json.

    .venv/bin/python -m bench.stream_bench [--rate 500] [--seconds 20] [--warmup 3]
        [--backlog 20000] [--set FIELD=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.results_file import write_results
from callscore.factories import events_from_frame
from callscore.harness import (
    StreamWorker,
    collect,
    event_bytes,
    isolated_settings,
    produce,
    publish_model,
    worker_settings,
)
from core.kafka import ensure_topics, producer_config
from core.local_broker import start_tansu
from core.settings import Settings
from core.topic_reader import read_topics
from trainer.synthetic import synthetic_bank_frame


def _produce_paced(settings: Settings, events: list[dict[str, Any]], rate: float) -> None:
    from confluent_kafka import Producer

    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    start = time.monotonic()
    for i, event in enumerate(events):
        due = start + i / rate
        while (now := time.monotonic()) < due:
            producer.poll(min(due - now, 0.005))
        producer.produce(
            settings.topic_prospects,
            key=event["prospect_id"].encode(),
            value=json.dumps(event).encode(),
            timestamp=int(time.time() * 1000),
        )
    producer.flush(30)


def _events(prefix: str, n: int) -> list[dict[str, Any]]:
    frame = synthetic_bank_frame(rows=n, seed=11)
    return events_from_frame(frame, prefix)


def run(
    rate: float, seconds: float, backlog: int, overrides: dict[str, str], warmup: float = 3.0
) -> dict[str, Any]:
    broker = start_tansu()
    workdir = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    try:
        base = isolated_settings(
            "bench",
            workdir,
            bootstrap_servers=broker.bootstrap_servers,
            partitions=int(overrides.pop("partitions", 4)),
            **overrides,
        )
        settings = worker_settings(base, workdir)
        ensure_topics(settings)
        publish_model(settings, version=1)
        worker = StreamWorker(settings, workdir / "worker.log")
        try:
            worker.wait_ready(90)
            tiers = list(settings.task_topics.values())

            # The first seconds after start-up include the consumer's first fetches; they are
            # reported apart so that the percentiles describe the steady state.
            warmup_events = int(rate * warmup)
            steady = _events("steady", warmup_events + int(rate * seconds))
            warm_ids = {e["event_id"] for e in steady[:warmup_events]}
            _produce_paced(settings, steady, rate)
            tasks = collect(settings, tiers, lambda r: len(r) >= len(steady), timeout=120)
            prospects_ts = _prospect_timestamps(settings)
            latency_by_id = {
                t.json()["event_id"]: (t.timestamp_ms - prospects_ts[t.json()["event_id"]]) / 1000.0
                for t in tasks
                if t.json()["event_id"] in prospects_ts
            }
            latencies = np.array([v for k, v in latency_by_id.items() if k not in warm_ids])
            warmup_max = max((v for k, v in latency_by_id.items() if k in warm_ids), default=0.0)

            burst = _events("burst", backlog)
            before = len(tasks)
            produce(settings, map(event_bytes, burst))
            all_tasks = collect(
                settings, tiers, lambda r: len(r) >= before + len(burst), timeout=300
            )
            prospects_ts = _prospect_timestamps(settings)
            burst_ids = {e["event_id"] for e in burst}
            burst_tasks = [t for t in all_tasks if t.json()["event_id"] in burst_ids]
            first_in = min(prospects_ts[i] for i in burst_ids)
            last_out = max(t.timestamp_ms for t in burst_tasks)
            throughput = len(burst_tasks) / ((last_out - first_in) / 1000.0)
            batch_count = worker.metric("callscore_batch_size_count")
            batch_sum = worker.metric("callscore_batch_size_sum")
        finally:
            worker.stop()
    finally:
        broker.stop()
    return {
        "broker": "tansu (fresh, in-memory)",
        "partitions": settings.partitions,
        "model": "small_artifact (OneHot + StandardScaler + LogisticRegression)",
        "settings": {
            "batch_max_size": settings.batch_max_size,
            "batch_max_wait_seconds": settings.batch_max_wait_seconds,
            "fetch_max_wait_ms": settings.fetch_max_wait_ms,
            "producer_linger_ms": settings.producer_linger_ms,
            "commit_interval_seconds": settings.commit_interval_seconds,
        },
        "steady": {
            "rate_events_per_s": rate,
            "events": len(steady),
            "tasks": len(tasks),
            "latency_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
            "latency_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
            "latency_max_ms": round(float(latencies.max()) * 1000, 1),
            "warmup_seconds": warmup,
            "warmup_latency_max_ms": round(warmup_max * 1000, 1),
        },
        "backlog": {
            "events": backlog,
            "tasks": len(burst_tasks),
            "throughput_events_per_s": round(throughput),
        },
        "mean_batch_size": round(batch_sum / batch_count, 1) if batch_count else None,
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
    }


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _prospect_timestamps(settings: Settings) -> dict[str, int]:
    records = read_topics(settings, [settings.topic_prospects], timeout=60)
    return {r.json()["event_id"]: r.timestamp_ms for r in records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured steady phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured start, seconds")
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a Settings field, e.g. --set batch_max_wait_seconds=0.01",
    )
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    result = run(args.rate, args.seconds, args.backlog, overrides, args.warmup)
    table = Table(title="callscore stream benchmark (fresh Tansu, 1 worker)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    steady = result["steady"]
    table.add_row(
        f"latency p50 at {steady['rate_events_per_s']:.0f} ev/s", f"{steady['latency_p50_ms']} ms"
    )
    table.add_row(
        f"latency p99 at {steady['rate_events_per_s']:.0f} ev/s", f"{steady['latency_p99_ms']} ms"
    )
    table.add_row("latency max", f"{steady['latency_max_ms']} ms")
    table.add_row(
        f"latency max in the first {steady['warmup_seconds']:.0f} s (excluded above)",
        f"{steady['warmup_latency_max_ms']} ms",
    )
    table.add_row(
        f"throughput (backlog of {result['backlog']['events']})",
        f"{result['backlog']['throughput_events_per_s']} ev/s",
    )
    table.add_row("mean batch size", str(result["mean_batch_size"]))
    for key, value in result["settings"].items():
        table.add_row(key, str(value))
    Console().print(table)
    print(write_results("stream_bench", result))


if __name__ == "__main__":
    main()
