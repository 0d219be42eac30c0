"""Claims per second with 20 agents: `POST /queue/claim` on one `callscore api`, one scorer.

    .venv/bin/python -m bench.tools.claims [--prospects 2000] [--agents 20] [--n 5]
                                           [--broker kafka|tansu]
Prints a table and writes bench/results/claims.json.

On a broker of its own (Apache Kafka; `--broker tansu` for the fallback): a scorer and an API
(the production model is not needed: a small signed model), N prospects' events scored into the
call queue, then each agent claims `n` tasks at a time, as fast as it gets answers, until a
claim comes back empty. Reported: tasks claimed per second (all agents), the latency of a claim
request (p50, p99), proposals refused (taken by another agent first) and undecided, and that no
prospect was held by two agents.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.broker import add_broker_option, start_broker
from bench.results import write_results
from core.kafka import ensure_topics
from core.local_broker import BrokerKind
from testkit.factories import valid_event
from testkit.harness import (
    ApiWorker,
    StreamWorker,
    event_bytes,
    isolated_settings,
    produce,
    publish_model,
    worker_settings,
)

READY_SECONDS = 120.0


def measure(prospects: int, agents: int, n: int, kind: BrokerKind = "kafka") -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="callscore-claims-"))
    broker = start_broker(kind, log_dir=str(workdir))
    try:
        settings = isolated_settings("claims", workdir, **broker.client_settings())
        settings = worker_settings(settings, workdir, "claims")
        ensure_topics(settings)
        publish_model(settings, version=1)
        scorer = StreamWorker(settings, workdir / "scorer.log")
        api = ApiWorker(settings, workdir / "api.log")
        try:
            scorer.wait_ready(READY_SECONDS)
            api.wait_ready(READY_SECONDS)
            events = [valid_event(event_id=f"e{i}", prospect_id=f"P{i}") for i in range(prospects)]
            produce(settings, [event_bytes(e) for e in events])
            api.wait_open_tasks(prospects, READY_SECONDS)
            held: Counter[str] = Counter()
            latencies: list[float] = []
            totals: Counter[str] = Counter()
            lock = threading.Lock()

            def agent(name: str) -> None:
                while True:
                    started = time.perf_counter()
                    answer = api.claim(name, n)
                    seconds = time.perf_counter() - started
                    with lock:
                        latencies.append(seconds)
                        held.update(t["prospect_id"] for t in answer["tasks"])
                        totals.update({k: answer[k] for k in ("proposed", "refused", "undecided")})
                    if not answer["tasks"] and not answer["undecided"]:
                        return

            threads = [threading.Thread(target=agent, args=(f"agent-{i}",)) for i in range(agents)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            span = time.perf_counter() - started
        finally:
            api.stop()
            scorer.stop()
    finally:
        broker.stop()
    ms = np.array(latencies) * 1000
    return {
        "broker": broker.origin,
        "prospects": prospects,
        "agents": agents,
        "tasks_per_request": n,
        "claimed": sum(held.values()),
        "held_twice": sum(1 for count in held.values() if count > 1),
        "seconds": round(span, 2),
        "claims_per_second": round(sum(held.values()) / span, 1),
        "requests": len(latencies),
        "request_p50_ms": round(float(np.percentile(ms, 50)), 1),
        "request_p99_ms": round(float(np.percentile(ms, 99)), 1),
        **dict(totals),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.claims")
    parser.add_argument("--prospects", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--n", type=int, default=5, help="tasks per claim request")
    add_broker_option(parser)
    args = parser.parse_args()
    row = measure(args.prospects, args.agents, args.n, args.broker)
    table = Table(title="POST /queue/claim: one API, one scorer, agents claiming at once")
    for key in row:
        table.add_column(key.replace("_", " "), justify="right")
    table.add_row(*(f"{v:,}" if isinstance(v, int | float) else str(v) for v in row.values()))
    Console(width=200).print(table)
    print(write_results("claims", row))


if __name__ == "__main__":
    main()
