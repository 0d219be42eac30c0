"""A replay month with attempts: recycles, callbacks and claims; conversion per attempt number
beside the data's own rate by `campaign`.

    .venv/bin/python -m bench.tools.replay_attempts [--month 2009-05] [--month-seconds 60]
        [--agents 4] [--outcome-delay 2d] [--ungated] [--set FIELD=VALUE ...]
        [--broker kafka|tansu]

On a fresh local broker (Apache Kafka unless `--broker tansu`, as bench/tools/replay_loop.py)
it trains v1 on the rows before --month
(`callscore train --search reference --no-outcomes`), starts `callscore stream` (the call queue
on, as by default) and `callscore api`, and replays that month with `callscore simulate`'s API in
its default mode, with attempts (callscore/simulator/attempts.py): a row with `campaign` = c is
up to CALLSCORE_MAX_ATTEMPTS calls, the earlier ones without a decision, the queue sending each
retry (`campaign` + 1) to be scored again. The simulator plans every call of a row up front
(each retry's call `DIAL_LAG` after it is due), so its plan runs past the month: the replay
publishes all of it, one month of event time per --month-seconds of wall time, then waits until
the scorer has applied every outcome and scored every retry. The queue's other extras
(repeated prospects, late events, objections, slow calls) are off, as in replay_loop: each row
is its own prospect, so every count below is the attempts' own.

The simulator holds each call's outcome until the queue has decided the event it calls (its
line in the prediction log; callscore/simulator/hold.py), and the replay waits meanwhile: it
dials a retry `DIAL_LAG` after it is due, which at a month a minute is 0.05 s (busy) to 2 s
(voicemail) of wall time, less than the queue takes to rescore a retry, so unheld most retries'
calls would come before their task and be stale. The replay therefore takes longer than
--month-seconds. --ungated replays with the hold off (`callscore simulate --no-hold`), to
measure just that race.

Meanwhile --agents agents claim from the API (`POST /queue/claim`, n=3, about every second),
only to measure claims under a real replay (the simulator makes the calls): granted, refused,
undecided, and whether a prospect was ever granted to a second agent while the first one's
lease ran on the same task (a violation).

Then it reads the topics back and the scorer's /metrics: rows, events (originals, retries),
calls per disposition and what the queue made of them, recycles, callbacks (due on time?),
retries under the score floor, attempts exhausted, claims; per attempt number (the event's
`campaign` at the call) calls, reached, subscribed, conversion and the mean served score, beside
the data's own conversion by `campaign` for the month and for the whole file. Prints tables,
writes bench/results/replay_attempts.json.
"""

from __future__ import annotations

import argparse
import calendar
import json
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.broker import add_broker_option, start_broker
from bench.overrides import add_set_option, overrides_from
from bench.results import write_results
from bench.tools.replay_loop import DAY, _train_base
from callqueue.rules import QueuePolicy
from callscore.commands.arguments import parse_delay
from callscore.simulator.attempts import CALLBACK_AFTER, DIAL_LAG, NO_DECISION
from callscore.simulator.hold import HOLD_TIMEOUT_SECONDS, HoldStats
from callscore.simulator.plan import plan_replay
from callscore.simulator.publish import run_replay
from callscore.simulator.records import ScheduledRecord
from core.kafka import ensure_topics
from core.local_broker import BrokerKind, LocalBroker, free_port
from core.settings import Settings
from core.topic_reader import Record, read_topics
from schemas import MONTHS, WITHDRAWAL_HEADER
from testkit.harness import ApiWorker, StreamWorker, isolated_settings
from trainer.data import load_bank, resolve_data_path

console = Console(width=200)
CLAIM_N = 3
CLAIM_EVERY_SECONDS = 1.0
READY_SECONDS = 180.0
DRAIN_SECONDS = 240.0
SETTLE_SECONDS = 3.0  # metrics unchanged this long: drained
BUCKETS = ("1", "2", "3", "4", "5", "6+")
ATTEMPT_SETTINGS: dict[str, Any] = {"partitions": 2}


def _bucket(campaign: int) -> str:
    return str(campaign) if campaign <= 5 else "6+"


def _settings(
    workdir: Path, broker: LocalBroker, month: str, overrides: dict[str, str]
) -> Settings:
    return isolated_settings(
        "attempts",
        workdir,
        base_data_until=month,
        http_host="127.0.0.1",
        http_port=free_port(),
        api_port=free_port(),
        streamer_app_id="attempts-scorer",
        streamer_data_dir=workdir / "faust",
        **{**broker.client_settings(), **ATTEMPT_SETTINGS, **overrides},
    )


# --- the plan: every call the simulator makes, row by row ------------------------------------
@dataclass(frozen=True)
class PlannedCall:
    row: int
    attempt: int  # 1 for the row's first call; the event's `campaign` at the call
    event_id: str
    task_id: str
    called_at: datetime
    disposition: str
    callback_at: datetime | None
    subscribed: bool | None
    published_ms: int = 0  # filled from the outcomes topic


def planned_calls(plan: list[ScheduledRecord]) -> dict[int, list[PlannedCall]]:
    """The plan's outcomes per row, first call first (attempt = position in the row)."""
    by_row: dict[int, list[PlannedCall]] = defaultdict(list)
    for record in plan:
        if record.kind != "outcome" or record.malformed is not None or record.row is None:
            continue
        outcome = json.loads(record.value or b"{}")
        calls = by_row[record.row]
        callback = outcome.get("callback_at")
        calls.append(
            PlannedCall(
                row=record.row,
                attempt=len(calls) + 1,
                event_id=outcome["event_id"],
                task_id=outcome["task_id"],
                called_at=datetime.fromisoformat(outcome["called_at"]),
                disposition=outcome["disposition"],
                callback_at=datetime.fromisoformat(callback) if callback else None,
                subscribed=outcome.get("subscribed"),
            )
        )
    return dict(by_row)


# --- agents claiming from the API ------------------------------------------------------------
@dataclass
class Grant:
    agent: str
    prospect_id: str
    task_id: str
    supersedes: str | None
    requested_at: float  # epoch seconds, the API's clock (lease_until - lease)
    lease_until: float


@dataclass
class Agents:
    """`count` agents claiming CLAIM_N tasks about every CLAIM_EVERY_SECONDS until stopped."""

    api: ApiWorker
    count: int
    lease_seconds: float
    grants: list[Grant] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(self.count):
            thread = threading.Thread(target=self._agent, args=(f"agent-{i}",), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)

    def _agent(self, name: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                answer = self.api.claim(name, CLAIM_N)
            except Exception as exc:  # an HTTP error or timeout is a result here, not a crash
                with self._lock:
                    self.errors[type(exc).__name__] += 1
            else:
                seconds = time.monotonic() - started
                lease_until = datetime.fromisoformat(answer["lease_until"]).timestamp()
                with self._lock:
                    self.latencies.append(seconds)
                    self.totals["requests"] += 1
                    self.totals["granted"] += len(answer["tasks"])
                    for key in ("proposed", "refused", "undecided"):
                        self.totals[key] += answer[key]
                    self.grants += [
                        Grant(
                            name,
                            task["prospect_id"],
                            task["task_id"],
                            task.get("supersedes"),
                            lease_until - self.lease_seconds,
                            lease_until,
                        )
                        for task in answer["tasks"]
                    ]
            self._stop.wait(max(0.0, CLAIM_EVERY_SECONDS - (time.monotonic() - started)))

    def summary(self) -> dict[str, Any]:
        """The answers' totals, and every grant checked against the grants before it: a prospect
        granted to another agent while an earlier grant's lease ran, on the same task (or on a
        task that superseded it, which carries the claim), is a violation."""
        last: dict[str, Grant] = {}
        violations: list[dict[str, Any]] = []
        regrants: Counter[str] = Counter()
        for grant in sorted(self.grants, key=lambda g: g.requested_at):
            before = last.get(grant.prospect_id)
            if before is not None:
                running = grant.requested_at < before.lease_until
                same_task = grant.task_id == before.task_id or grant.supersedes == before.task_id
                if grant.agent == before.agent:
                    regrants["same agent again"] += 1
                elif running and same_task:
                    violations.append({"first": vars(before), "second": vars(grant)})
                elif running:
                    regrants["another agent, the task changed (outcome closed the first)"] += 1
                else:
                    regrants["another agent, after the lease"] += 1
            last[grant.prospect_id] = grant
        ms = np.array(self.latencies) * 1000 if self.latencies else np.array([np.nan])
        return {
            "agents": self.count,
            "tasks_per_request": CLAIM_N,
            **{k: int(self.totals[k]) for k in ("requests", "proposed", "granted")},
            **{k: int(self.totals[k]) for k in ("refused", "undecided")},
            "errors": dict(self.errors),
            "prospects_granted": len({g.prospect_id for g in self.grants}),
            "tasks_granted": len({g.task_id for g in self.grants}),
            "regranted": dict(regrants),
            "violations": len(violations),
            "violation_examples": violations[:5],
            "request_p50_ms": round(float(np.nanpercentile(ms, 50)), 1),
            "request_p99_ms": round(float(np.nanpercentile(ms, 99)), 1),
        }


# --- the scorer's counters -------------------------------------------------------------------
QUEUE_RESULTS = (
    "queued", "late", "cooling_down", "suppressed", "duplicate", "below_floor", "closed",
    "recycled", "stale", "claims_granted", "claims_refused", "invalid",
)  # fmt: skip
SCORED_RESULTS = ("queued", "late", "cooling_down", "suppressed", "duplicate", "below_floor")


def scorer_metrics(scorer: StreamWorker) -> dict[str, Any]:
    inputs = {
        r: int(scorer.metric("callscore_queue_inputs_total", f'result="{r}"'))
        for r in QUEUE_RESULTS
    }
    withdrawals = {
        r: int(scorer.metric("callscore_queue_withdrawals_total", f'reason="{r}"'))
        for r in ("closed", "recycled", "expired", "suppressed")
    }
    return {
        "queue_inputs": inputs,
        "withdrawals": withdrawals,
        "exhausted": int(scorer.metric("callscore_queue_attempts_exhausted_total")),
        "superseded": int(scorer.metric("callscore_queue_superseded_total")),
        "open_tasks": int(scorer.metric("callscore_queue_open_tasks")),
        "events_consumed": int(scorer.metric("callscore_events_consumed_total")),
        "dead_lettered": int(scorer.metric("callscore_events_dead_lettered_total")),
        "send_retries": int(scorer.metric("callscore_batch_send_retries_total")),
    }


def drain(scorer: StreamWorker, events: int, outcomes: int, timeout: float) -> dict[str, Any]:
    """Until the queue has applied every outcome and scored every row's event and every retry it
    sent (scored = events + recycled), and its counters stop moving; the last metrics."""
    deadline = time.monotonic() + timeout
    previous: dict[str, Any] | None = None
    steady_since = time.monotonic()
    while True:
        metrics = scorer_metrics(scorer)
        inputs = metrics["queue_inputs"]
        scored = sum(inputs[r] for r in SCORED_RESULTS)
        applied = inputs["closed"] + inputs["recycled"] + inputs["stale"]
        done = applied >= outcomes and scored >= events + inputs["recycled"]
        if metrics != previous:
            previous, steady_since = metrics, time.monotonic()
        if done and time.monotonic() - steady_since >= SETTLE_SECONDS:
            return metrics
        if time.monotonic() > deadline:
            console.print(
                f"[red]not drained after {timeout:.0f} s[/]: outcomes applied {applied} of "
                f"{outcomes}, scored {scored} of {events} + {inputs['recycled']} retries"
            )
            return metrics
        time.sleep(1.0)


# --- the topics read back --------------------------------------------------------------------
@dataclass
class Topics:
    events: list[dict[str, Any]]  # the prospects topic: rows' events and the queue's retries
    predictions: dict[str, dict[str, Any]]  # by task_id (one event per task)
    outcome_ms: dict[str, int]  # task_id -> the outcome's publication time (Kafka timestamp)
    queued_ms: dict[str, int]  # task_id -> its first record on the call-queue topic
    withdrawn: dict[str, str]  # task_id -> the reason of its withdrawal
    claimed: set[str]  # task ids shown held by a claim on the call-queue topic

    @classmethod
    def read(cls, settings: Settings) -> Topics:
        names = {
            "events": settings.topic_prospects,
            "outcomes": settings.topic_outcomes,
            "predictions": settings.topic_predictions,
            "queue": settings.topic_queue,
        }
        records = read_topics(settings, names.values(), timeout=120)
        by_topic: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            by_topic[record.topic].append(record)
        predictions: dict[str, dict[str, Any]] = {}
        for record in by_topic[names["predictions"]]:
            line = record.json()
            predictions.setdefault(line["task_id"], line)
        outcome_ms: dict[str, int] = {}
        for record in by_topic[names["outcomes"]]:
            outcome_ms.setdefault(record.json()["task_id"], record.timestamp_ms)
        queued_ms: dict[str, int] = {}
        withdrawn: dict[str, str] = {}
        claimed: set[str] = set()
        for record in by_topic[names["queue"]]:
            if record.value is None:
                task_id = record.headers.get("task_id", b"").decode()
                withdrawn[task_id] = record.headers.get(WITHDRAWAL_HEADER, b"?").decode()
                continue
            task = record.json()
            queued_ms.setdefault(task["task_id"], record.timestamp_ms)
            if task.get("claim_id"):
                claimed.add(task["task_id"])
        return cls(
            [r.json() for r in by_topic[names["events"]]],
            predictions,
            outcome_ms,
            queued_ms,
            withdrawn,
            claimed,
        )


# --- what happened to each call --------------------------------------------------------------
EFFECTIVE = ("closed", "recycled")  # the outcome named the open task and the queue applied it


def call_fate(call: PlannedCall, topics: Topics, policy: QueuePolicy) -> str:
    """What the queue made of one call's outcome: `applied` (it named the open task), or why it
    was stale: the retry never sent (an earlier call stale), scored under the floor, or the
    outcome published before the retry's task was queued (the replay outran the queue)."""
    if topics.withdrawn.get(call.task_id) in EFFECTIVE:
        return "applied"
    prediction = topics.predictions.get(call.task_id)
    if prediction is None:
        return "stale: retry never sent"
    if call.task_id not in topics.queued_ms:
        below = prediction.get("retry_of") and prediction["score"] < policy.retry_min_score
        return "stale: retry under the floor" if below else "stale: retry not queued"
    if topics.outcome_ms.get(call.task_id, 0) < topics.queued_ms[call.task_id]:
        return "stale: outcome before its task"
    return "stale: other"


def _mean(values: Iterable[float]) -> float | None:
    items = list(values)
    return round(float(np.mean(items)), 4) if items else None


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def data_by_campaign(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    buckets = frame["campaign"].astype(int).map(_bucket)
    yes = frame["y"] == "yes"
    out: dict[str, dict[str, Any]] = {}
    for bucket in BUCKETS:
        mask = buckets == bucket
        out[bucket] = {
            "rows": int(mask.sum()),
            "rate": _rate(int(yes[mask].sum()), int(mask.sum())),
        }
    at_least_5 = frame["campaign"].astype(int) >= 5
    rows = int(at_least_5.sum())
    out["5 and over"] = {"rows": rows, "rate": _rate(int(yes[at_least_5].sum()), rows)}
    return out


def analyse(
    frame: pd.DataFrame,
    month: str,
    calls: dict[int, list[PlannedCall]],
    topics: Topics,
    policy: QueuePolicy,
) -> dict[str, Any]:
    rows = frame[frame["period"] == month]
    month_feature = MONTHS[int(month[5:7]) - 1]
    retries = [e for e in topics.events if e.get("retry_of")]
    originals = [e for e in topics.events if not e.get("retry_of")]
    every = [c for row_calls in calls.values() for c in row_calls]
    fates = {c.task_id: call_fate(c, topics, policy) for c in every}
    first_score = {
        row: topics.predictions[row_calls[0].task_id]["score"]
        for row, row_calls in calls.items()
        if row_calls[0].task_id in topics.predictions
    }

    # Calls per disposition, as planned and as applied.
    dispositions: dict[str, Counter[str]] = defaultdict(Counter)
    for c in every:
        dispositions[c.disposition][fates[c.task_id]] += 1

    # Per attempt number.
    attempts: dict[str, dict[str, Any]] = {}
    for number in range(1, policy.max_attempts + 1):
        at = [c for c in every if c.attempt == number]
        applied = [c for c in at if fates[c.task_id] == "applied"]
        reached = [c for c in applied if c.disposition == "reached"]
        subscribed = sum(1 for c in reached if c.subscribed)
        scored = [p for p in topics.predictions.values() if p["features"]["campaign"] == number]
        below = [p for p in scored if p.get("retry_of") and p["task_id"] not in topics.queued_ms]
        served = [topics.predictions[c.task_id]["score"] for c in applied]
        attempts[str(number)] = {
            "calls": len(at),
            "applied": len(applied),
            "stale": len(at) - len(applied),
            "reached": len(reached),
            "subscribed": subscribed,
            "conversion": _rate(subscribed, len(reached)),
            "mean_served_score": _mean(served),
            "mean_served_score_reached": _mean(
                topics.predictions[c.task_id]["score"] for c in reached
            ),
            "same_rows_attempt_1_score": _mean(first_score[c.row] for c in applied),
            "scored_events": len(scored),
            "mean_score_scored": _mean(p["score"] for p in scored),
            "not_queued_retries": len(below),
            "month_feature_changed": sum(
                1 for p in scored if p["features"]["month"] != month_feature
            ),
        }

    # Rows: did the row's last call (its `y`) reach the queue, and if not, where did it stop?
    row_fate: Counter[str] = Counter()
    lost_yes: Counter[str] = Counter()
    floor_rows: list[dict[str, Any]] = []
    for row, row_calls in calls.items():
        broken = next((c for c in row_calls if fates[c.task_id] != "applied"), None)
        key = "label delivered" if broken is None else f"{fates[broken.task_id]} (attempt "
        if broken is not None:
            key += f"{broken.attempt})"
        row_fate[key] += 1
        if broken is not None and row_calls[-1].subscribed:
            lost_yes[key] += 1
        if broken is not None and fates[broken.task_id] == "stale: retry under the floor":
            p = topics.predictions[broken.task_id]
            floor_rows.append(
                {"row": row, "attempt": broken.attempt, "score": p["score"],
                 "subscribed": bool(row_calls[-1].subscribed)}
            )  # fmt: skip

    # Callbacks: retried, due exactly at callback_at, queued whatever the score.
    callbacks = [c for c in every if c.disposition == "callback"]
    by_retry_of = {p["retry_of"]: p for p in topics.predictions.values() if p.get("retry_of")}
    callback_retries = [by_retry_of[c.task_id] for c in callbacks if c.task_id in by_retry_of]
    on_time = sum(
        1
        for c in callbacks
        if c.task_id in by_retry_of
        and c.callback_at is not None
        and datetime.fromisoformat(by_retry_of[c.task_id]["not_before"]) == c.callback_at
    )
    # Every retry's not_before against the policy's delay for its reason.
    due_as_policy = 0
    for c in every:
        retry = by_retry_of.get(c.task_id)
        if retry is None or retry.get("not_before") is None:
            continue
        delays: dict[str, timedelta] = {str(k): v for k, v in policy.retry_after.items()}
        expected = c.callback_at or c.called_at + delays.get(c.disposition, timedelta())
        due_as_policy += datetime.fromisoformat(retry["not_before"]) == expected

    # How long the queue took from a call's outcome to its retry's task (wall time).
    lags = [
        (topics.queued_ms[r["task_id"]] - topics.outcome_ms[r["retry_of"]]) / 1000
        for r in by_retry_of.values()
        if r["task_id"] in topics.queued_ms and r["retry_of"] in topics.outcome_ms
    ]
    return {
        "rows": len(rows),
        "rows_planned": len(calls),
        "multi_contact_rows": int((rows["campaign"] > 1).sum()),
        "events": {"originals": len(originals), "retries": len(retries)},
        "retry_reasons": dict(Counter(r.get("retry_reason") for r in retries)),
        "calls": len(every),
        "calls_by_disposition": {k: dict(v) for k, v in sorted(dispositions.items())},
        "call_fates": dict(Counter(fates.values())),
        "attempts": attempts,
        "rows_by_fate": dict(row_fate.most_common()),
        "subscribed_rows_without_label": dict(lost_yes.most_common()),
        "floor": {
            "retry_min_score": policy.retry_min_score,
            "rows_stopped": len(floor_rows),
            "subscribed_among_them": sum(1 for r in floor_rows if r["subscribed"]),
            "mean_score": _mean(r["score"] for r in floor_rows),
            "by_attempt": dict(Counter(str(r["attempt"]) for r in floor_rows)),
        },
        "callbacks": {
            "calls": len(callbacks),
            "applied": sum(1 for c in callbacks if fates[c.task_id] == "applied"),
            "retried": len(callback_retries),
            "due_at_callback_at": on_time,
            "queued": sum(1 for r in callback_retries if r["task_id"] in topics.queued_ms),
            "under_the_floor_but_queued": sum(
                1
                for r in callback_retries
                if r["score"] < policy.retry_min_score and r["task_id"] in topics.queued_ms
            ),
        },
        "retries_due_as_policy": {"retries": len(by_retry_of), "due_as_policy": due_as_policy},
        "outcome_to_retry_task_seconds": {
            "n": len(lags),
            "p50": round(float(np.percentile(lags, 50)), 3) if lags else None,
            "p90": round(float(np.percentile(lags, 90)), 3) if lags else None,
            "max": round(float(max(lags)), 3) if lags else None,
        },
        "claimed_tasks_on_queue_topic": len(topics.claimed),
        "data_by_campaign": {"month": data_by_campaign(rows), "file": data_by_campaign(frame)},
    }


def _wall(delta: timedelta, speedup: float) -> float:
    return delta.total_seconds() / speedup


def run(
    month: str,
    month_seconds: float,
    agents: int,
    delay: str,
    ungated: bool,
    overrides: dict[str, str],
    kind: BrokerKind = "kafka",
) -> dict[str, Any]:
    from callscore.simulator.options import ReplayOptions

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="replay-attempts-"))
    broker = start_broker(kind, log_dir=str(workdir))
    processes: list[StreamWorker] = []
    try:
        settings = _settings(workdir, broker, month, overrides)
        policy = QueuePolicy.of(settings)
        data = resolve_data_path(None, settings)
        frame, _sha = load_bank(data)
        ensure_topics(settings)
        console.print(f"[bold]replay of {month} with attempts[/]: v1 on rows before; {workdir}")
        _train_base(settings, data, workdir)
        console.print(f"v1 trained and published after {time.monotonic() - started:.0f} s")
        scorer = StreamWorker(settings, workdir / "stream.log")
        processes.append(scorer)
        api = ApiWorker(settings, workdir / "api.log")
        processes.append(api)
        scorer.wait_ready(READY_SECONDS)
        api.wait_ready(READY_SECONDS)

        options = ReplayOptions(
            start=month,
            months=1,
            outcome_delay=parse_delay(delay),
            repeat_rate=0.0,
            late_rate=0.0,
            do_not_call_rate=0.0,
            slow_call_rate=0.0,
            attempts=policy,
        )
        plan = plan_replay(frame, options)
        calls = planned_calls(plan)
        events = sum(1 for r in plan if r.kind == "event")
        outcomes = sum(len(c) for c in calls.values())
        year, number = int(month[:4]), int(month[5:7])
        speedup = calendar.monthrange(year, number)[1] * DAY / month_seconds
        span = plan[-1].at - plan[0].at
        busy = _wall(policy.retry_after["busy"] + DIAL_LAG, speedup)
        no_answer = _wall(policy.retry_after["no_answer"] + DIAL_LAG, speedup)
        console.print(
            f"replaying {events:,} rows as {outcomes:,} calls, {plan[0].at:%Y-%m-%d} to "
            f"{plan[-1].at:%Y-%m-%d %H:%M} ({_wall(span, speedup):.0f} s at x{speedup:,.0f}; "
            f"a busy line's retry is called {busy:.3f} s after it, an unanswered call's "
            f"{no_answer:.3f} s)"
        )
        desk = Agents(api, agents, settings.claim_lease_seconds)
        desk.start()
        replay_started = time.monotonic()
        summary = run_replay(
            settings,
            plan,
            speedup,
            on_month=lambda m, c, s: console.print(
                f"  {m}: {c.events:,} events, {c.outcomes:,} outcomes "
                f"({c.no_decision:,} no decision) by {s:.0f} s"
            ),
            hold=not ungated,
        )
        gate = summary.hold
        replay_seconds = time.monotonic() - replay_started
        metrics = drain(scorer, events, outcomes, DRAIN_SECONDS)
        drained_seconds = time.monotonic() - replay_started
        desk.stop()
        metrics = scorer_metrics(scorer)  # with the last claims
        claims = desk.summary()
        topics = Topics.read(settings)
    finally:
        for process in processes:
            process.stop()
        broker.stop()
    result = analyse(frame, month, calls, topics, policy)
    return {
        "month": month,
        "month_seconds": month_seconds,
        "speedup": round(speedup),
        "outcome_delay": delay,
        "policy": {
            "max_attempts": policy.max_attempts,
            "retry_min_score": policy.retry_min_score,
            "retry_after_hours": {
                k: v.total_seconds() / 3600 for k, v in policy.retry_after.items()
            },
            "callback_after_hours": CALLBACK_AFTER.total_seconds() / 3600,
            "dial_lag_minutes": DIAL_LAG.total_seconds() / 60,
            "no_decision_shares": dict(NO_DECISION),
        },
        "pacing": "calls not held (--no-hold)" if gate is None else "calls held until decided",
        "gate": None if gate is None else _gate_summary(gate),
        "replay_seconds": round(replay_seconds, 1),
        "drained_after_seconds": round(drained_seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "broker": broker.origin,
        **result,
        "metrics": metrics,
        "claims": claims,
        "workdir": str(workdir),
    }


def _gate_summary(gate: HoldStats) -> dict[str, Any]:
    """The simulator's hold (callscore/simulator/hold.py)."""
    seconds = gate.held_seconds or [float("nan")]
    return {
        "held": gate.held,
        "held_by_attempt": {str(k): v for k, v in sorted(gate.held_by_attempt.items())},
        "held_p50_seconds": round(float(np.percentile(seconds, 50)), 3),
        "held_p90_seconds": round(float(np.percentile(seconds, 90)), 3),
        "held_max_seconds": round(float(max(seconds)), 3),
        "held_total_seconds": round(gate.total_seconds, 1),
        "held_too_long": gate.too_long,
        "not_held_event_will_not_come": gate.skipped,
    }


# --- tables ----------------------------------------------------------------------------------
def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _table(title: str, columns: Iterable[str], rows: Iterable[Iterable[str]]) -> Table:
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _slash(*values: int) -> str:
    return " / ".join(f"{v:,}" for v in values)


def _items(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items())


def print_tables(r: dict[str, Any]) -> None:
    m, inputs = r["metrics"], r["metrics"]["queue_inputs"]
    title = (
        f"Replay of {r['month']} with attempts ({r['month_seconds']:.0f} s a month, "
        f"x{r['speedup']:,}, outcomes {r['outcome_delay']} after the event)"
    )
    applied = inputs["closed"] + inputs["recycled"]
    claims = _slash(inputs["claims_granted"], inputs["claims_refused"])
    overview = [
        ("rows replayed", _n(r["rows"]), "data"),
        ("  of them with campaign > 1", _n(r["multi_contact_rows"]), "data"),
        ("events: rows' own", _n(r["events"]["originals"]), "prospects topic"),
        ("events: retries sent by the queue", _n(r["events"]["retries"]), "prospects topic"),
        ("  by reason", _items(r["retry_reasons"]), "prospects topic"),
        ("calls (outcomes published)", _n(r["calls"]), "simulator"),
        ("outcomes applied (closed + recycled)", _n(applied), "/metrics"),
        ("outcomes stale", _n(inputs["stale"]), "/metrics"),
        ("recycled", _n(inputs["recycled"]), "/metrics"),
        ("retries under the score floor", _n(inputs["below_floor"]), "/metrics"),
        ("attempts exhausted", _n(m["exhausted"]), "/metrics"),
        ("tasks queued", _n(inputs["queued"]), "/metrics"),
        ("  superseded an open task", _n(m["superseded"]), "/metrics"),
        ("withdrawals", _items(m["withdrawals"]), "/metrics"),
        ("open tasks at the end", _n(m["open_tasks"]), "/metrics"),
        ("claims granted / refused (queue)", claims, "/metrics"),
    ]
    gate = r.get("gate")
    if gate is not None:
        held = (
            f"{gate['held']:,} (p50 {gate['held_p50_seconds']:.2f} s, p90 "
            f"{gate['held_p90_seconds']:.2f} s, max {gate['held_max_seconds']:.2f} s)"
        )
        overview += [
            ("calls held until the queue decided their event", held, "simulator"),
            ("  by attempt", _items(gate["held_by_attempt"]), "simulator"),
            ("  seconds held in all", f"{gate['held_total_seconds']:,.1f}", "simulator"),
            (
                f"  held too long (> {HOLD_TIMEOUT_SECONDS:g} s, published undecided)",
                _n(gate["held_too_long"]),
                "simulator",
            ),
            (
                "calls not held: their event will not come",
                _n(gate["not_held_event_will_not_come"]),
                "simulator",
            ),
        ]
    else:
        overview.append(("pacing", "callscore simulate --no-hold: calls not held", "replay"))
    console.print(_table(title, ("what", "count", "from"), overview))

    fates = sorted({f for d in r["calls_by_disposition"].values() for f in d})
    console.print(
        _table(
            "Calls per disposition and what the queue made of their outcomes",
            ("disposition", "calls", *fates),
            [
                (d, _n(sum(c.values())), *(_n(c.get(f, 0)) for f in fates))
                for d, c in r["calls_by_disposition"].items()
            ],
        )
    )

    cb, floor, lag = r["callbacks"], r["floor"], r["outcome_to_retry_task_seconds"]
    due = r["retries_due_as_policy"]
    by_attempt = ", ".join(f"{k}: {v}" for k, v in sorted(floor["by_attempt"].items()))
    timing = [
        ("callback calls / applied / retried", _slash(cb["calls"], cb["applied"], cb["retried"])),
        ("  retry due at callback_at (on time)", _n(cb["due_at_callback_at"])),
        (
            "  retry queued / of them scored under the floor",
            _slash(cb["queued"], cb["under_the_floor_but_queued"]),
        ),
        ("retries due as the policy says / retries", _slash(due["due_as_policy"], due["retries"])),
        (f"rows stopped by the floor ({floor['retry_min_score']})", _n(floor["rows_stopped"])),
        ("  their mean retry score", _f(floor["mean_score"])),
        ("  of them y=yes at their last contact", _n(floor["subscribed_among_them"])),
        ("  by attempt", by_attempt or "-"),
        (
            "outcome -> its retry's task queued, wall s (p50 / p90 / max)",
            f"{_f(lag['p50'])} / {_f(lag['p90'])} / {_f(lag['max'])}",
        ),
    ]
    console.print(_table("Callbacks, the floor, the retries' timing", ("what", "value"), timing))

    lost = r["subscribed_rows_without_label"]
    console.print(
        _table(
            "Rows: did the last call (the row's y) reach the queue?",
            ("fate", "rows", "of them y=yes"),
            [
                (k, _n(v), "-" if k == "label delivered" else _n(lost.get(k, 0)))
                for k, v in r["rows_by_fate"].items()
            ],
        )
    )

    month_data, file_data = r["data_by_campaign"]["month"], r["data_by_campaign"]["file"]
    rows = []
    for bucket in BUCKETS:
        data = (
            _n(month_data[bucket]["rows"]),
            _f(month_data[bucket]["rate"]),
            _n(file_data[bucket]["rows"]),
            _f(file_data[bucket]["rate"]),
        )
        a = r["attempts"].get(bucket)
        if a is None:
            rows.append((bucket, *["-"] * 11, *data))
            continue
        replay = (
            *(_n(a[k]) for k in ("calls", "applied", "reached", "subscribed")),
            _f(a["conversion"]),
            *(_f(a[k]) for k in ("mean_served_score", "mean_served_score_reached")),
            _f(a["same_rows_attempt_1_score"]),
            *(_n(a[k]) for k in ("scored_events", "not_queued_retries", "month_feature_changed")),
        )
        rows.append((bucket, *replay, *data))
    columns = (
        "attempt", "calls", "applied", "reached", "subscribed", "conv",
        "served score", "score reached", "same rows' 1st", "scored", "not queued",
        "month moved", "month rows", "month rate", "file rows", "file rate",
    )  # fmt: skip
    title = (
        "Per attempt number (the event's campaign at the call) beside the data's conversion "
        "by campaign"
    )
    console.print(_table(title, columns, rows))
    last = r["policy"]["max_attempts"]
    console.print(
        f"By the replay's assumption the reached call of a row with campaign = c is attempt "
        f"min(c, {last}): 'conv' at attempt k < {last} is the month's rate for campaign = k by "
        f"construction (same rows), and at attempt {last} that of campaign >= {last} (month "
        f"{_f(month_data['5 and over']['rate'])}, file {_f(file_data['5 and over']['rate'])}); "
        "equal numbers are no finding. What the replay measures is the served score by attempt "
        "(the model rescoring the retry with campaign + 1), the same rows' first score beside "
        "it, and what the floor and the queue dropped. 'served score': mean over the applied "
        "calls; 'not queued': retries scored but given no task; 'month moved': retries whose "
        "`month` feature is no longer the row's (a retry is dated the day it is due)."
    )

    c = r["claims"]
    regranted = ", ".join(f"{k}: {v}" for k, v in c["regranted"].items()) or "0"
    claim_row = (
        *(_n(c[k]) for k in ("requests", "proposed", "granted", "refused", "undecided")),
        str(sum(c["errors"].values())),
        _n(c["prospects_granted"]),
        regranted,
        _n(c["violations"]),
        _f(c["request_p50_ms"], 1),
        _f(c["request_p99_ms"], 1),
    )
    claim_columns = (
        "requests", "proposed", "granted", "refused", "undecided", "errors", "prospects",
        "regranted", "violations", "p50 ms", "p99 ms",
    )  # fmt: skip
    title = f"Claims: {c['agents']} agents, n={c['tasks_per_request']} about every second"
    console.print(_table(title, claim_columns, [claim_row]))
    console.print(
        f"wall {r['wall_seconds']:.0f} s (replay {r['replay_seconds']:.0f} s, drained "
        f"{r['drained_after_seconds']:.0f} s after its start); work dir {r['workdir']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--month", default="2009-05")
    parser.add_argument("--month-seconds", type=float, default=60.0)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--outcome-delay", default="2d")
    parser.add_argument(
        "--ungated",
        action="store_true",
        help="publish every call when its event time comes, as `callscore simulate --no-hold` "
        "does, even a retry's call before the queue has queued the retry (bench/results/"
        "replay_attempts_ungated.json)",
    )
    add_set_option(parser)
    add_broker_option(parser)
    args = parser.parse_args()
    result = run(
        args.month,
        args.month_seconds,
        args.agents,
        args.outcome_delay,
        args.ungated,
        overrides_from(args),
        args.broker,
    )
    print_tables(result)
    print(write_results("replay_attempts_ungated" if args.ungated else "replay_attempts", result))


if __name__ == "__main__":
    main()
