"""The side-by-side suite: every scenario on one broker the suite starts (Apache Kafka by
default, Tansu with `broker_kind="tansu"`, or one it is given), each on fresh topics, with the
same payloads and Settings; one result document with the machine, the broker and the load."""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.context import Context, Observer, Options, no_observer
from bench.machine import load_average, machine_info
from bench.payloads import Payloads
from bench.production_model import bank_data, production_artifact
from bench.results import Backlog, BrokerUsed, Failed, LoadAverage, Outcome, Round, SuiteResult
from bench.scenarios import latency, reload, throughput
from bench.tables import summarised
from core.local_broker import BrokerKind, LocalBroker, start_local_broker
from registry.artifact import ModelArtifact
from testkit.factories import small_artifact

Scenario = Callable[[Context], Outcome]

# In running order. "latency" includes /score (alone and beside the stream) unless only
# "latency_only" is asked for.
SCENARIOS: dict[str, Scenario] = {
    "confluent_loop": throughput.confluent_loop,
    "native_loop": throughput.native_loop,
    "faust_passthrough": throughput.faust_passthrough,
    "scorer_production": throughput.scorer_production,
    "scorer_no_queue": throughput.scorer_no_queue,
    "scorer_small": throughput.scorer_small,
    "scorer_two_workers": throughput.scorer_two_workers,
    "per_event": throughput.per_event,
    "latency": latency.latency_and_http,
    "latency_only": latency.latency_only,
    "reload": reload.reload_under_load,
}
DEFAULT = [name for name in SCENARIOS if name != "latency_only"]
# Run `Options.rounds` times, interleaved, best round reported.
THROUGHPUT = {
    "confluent_loop",
    "native_loop",
    "faust_passthrough",
    "scorer_production",
    "scorer_no_queue",
    "scorer_small",
    "scorer_two_workers",
    "per_event",
}
# Where a scenario's result goes in the document (latency_only reports as "latency").
RESULT_KEY = {"latency_only": "latency"}
SETTINGS_SHOWN = (
    "partitions",
    "batch_max_size",
    "batch_max_wait_seconds",
    "fetch_max_wait_ms",
    "producer_linger_ms",
    "commit_interval_seconds",
    "session_timeout_seconds",
    "heartbeat_interval_seconds",
    "http_score_processes",
    "http_score_queue",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(
    only: list[str],
    options: Options,
    overrides: dict[str, str],
    data_path: Path | None = None,
    production: ModelArtifact | None = None,
    observe: Observer = no_observer,
    broker_kind: BrokerKind = "kafka",
    broker: LocalBroker | None = None,
) -> SuiteResult:
    """The scenarios `only`, in the suite's order, on one broker: a fresh one of `broker_kind`
    (stopped at the end), or `broker` (left running: e.g. a test session's); `production`
    instead of the model the bench trains, `observe` beside every throughput scenario's
    consumers."""
    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_info()
    load_at_start = load_average()
    data = bank_data(data_path)
    log(f"data: {data.source}")
    cached = True
    if production is None:
        production, cached = production_artifact(data, log)
    described = (
        f"{production.metadata.candidate} ({type(production.pipeline).__name__}), "
        f"holdout ROC AUC {production.metadata.metrics.get('holdout_roc_auc', 0):.3f}"
        f"{', cached' if cached else ', trained now'}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="callscore-bench-"))
    owned = broker is None
    if broker is None:
        (workdir / "broker").mkdir()
        broker = start_local_broker(broker_kind, log_dir=str(workdir / "broker"))
    log(f"broker: {broker.origin} ({broker.kind}) at {broker.bootstrap_servers}")
    ctx = Context(
        broker=broker,
        workdir=workdir,
        options=options,
        overrides=overrides,
        payloads=Payloads(data.frame),
        production=production,
        small=small_artifact(1),
        data_source=data.source,
        observe=observe,
    )
    scenarios: dict[str, Outcome] = {}
    rounds: dict[str, list[Outcome]] = {}
    try:
        shown = ctx.settings("settings-check")
        settings = {name: getattr(shown, name) for name in SETTINGS_SHOWN}
        throughput_names = [n for n in only if n in THROUGHPUT]
        for round_number in range(1, options.rounds + 1):
            for name in throughput_names:
                outcome = _run_one(ctx, name, f" (round {round_number}/{options.rounds})")
                rounds.setdefault(name, []).append(outcome)
        for name in throughput_names:
            scenarios[name] = best_round(rounds[name])
        for name in only:
            if name not in THROUGHPUT:
                scenarios[RESULT_KEY.get(name, name)] = _run_one(ctx, name)
    finally:
        if owned:
            broker.stop()
    result = SuiteResult(
        started_at=started_at,
        machine=machine,
        load_average=LoadAverage(start=load_at_start, end=load_average()),
        broker=BrokerUsed(kind=broker.kind, origin=broker.origin),
        options=options.as_dict(),
        overrides=overrides,
        data_source=data.source,
        production_model=described,
        workdir=str(workdir),
        settings=settings,
        scenarios=scenarios,
        duration_seconds=round(time.monotonic() - started, 1),
    )
    return summarised(result)


def _run_one(ctx: Context, name: str, label: str = "") -> Outcome:
    log(f"{name}{label} ...")
    began = time.monotonic()
    outcome: Outcome
    try:
        outcome = SCENARIOS[name](ctx)
    except Exception as exc:  # one failed scenario must not cost the others
        traceback.print_exc()
        outcome = Failed(error=f"{type(exc).__name__}: {exc}"[:2000])
    outcome.seconds = round(time.monotonic() - began, 1)
    outcome.load_average_after = load_average()
    log(f"{name}{label} done in {outcome.seconds} s")
    return outcome


def best_round(outcomes: list[Outcome]) -> Outcome:
    """The round with the highest rate, with every round's rate and CPU beside it.

    Other processes can only slow a round down, so the best one is the least disturbed
    (timeit's rule); a failed round counts only if every round failed.
    """
    measured = [o for o in outcomes if isinstance(o, Backlog) and o.events_per_s]
    best: Outcome = max(measured, key=lambda o: o.events_per_s or 0) if measured else outcomes[-1]
    kept = set(Round.model_fields)
    every = [Round.model_validate(o.model_dump(include=kept)) for o in outcomes]
    return best.model_copy(update={"rounds": every})
