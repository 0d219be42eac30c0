"""The replay with attempts through a running scorer and a real broker: at a speed where a
retry's call comes milliseconds after it is due, far sooner than the queue can send and rescore
the retry, the held replay calls no task before the queue has it (nothing stale, every row's
last call closes its task); unheld (`--no-hold`), the same speed makes the calls stale."""

from __future__ import annotations

import pandas as pd

from callqueue.rules import QueuePolicy
from callscore.simulator.plan import ReplayOptions, plan_replay
from callscore.simulator.publish import run_replay
from callscore.simulator.records import ScheduledRecord
from core.kafka import ensure_topics
from core.topic_reader import read_topics
from schemas import WITHDRAWAL_HEADER
from testkit.harness import StreamWorker, publish_model, worker_settings
from trainer.data import add_periods
from trainer.synthetic import synthetic_bank_frame

ROWS_ONLY = {"repeat_rate": 0.0, "late_rate": 0.0, "do_not_call_rate": 0.0, "slow_call_rate": 0.0}
ROWS = 6  # per replay, each of 2 to 4 contacts
WAIT_SECONDS = 60


def _inputs(worker: StreamWorker) -> dict[str, int]:
    return {
        result: int(worker.metric("callscore_queue_inputs_total", f'result="{result}"'))
        for result in ("closed", "recycled", "stale")
    }


def _replay(settings, worker, plan: list[ScheduledRecord], hold: bool) -> dict[str, int]:
    """Replay the plan with its span in about a second of wall time; the queue's counts for it
    once every outcome was applied."""
    before = _inputs(worker)
    calls = sum(1 for r in plan if r.kind == "outcome")
    speedup = (plan[-1].at - plan[0].at).total_seconds()
    summary = run_replay(settings, plan, speedup, hold=hold)
    assert (summary.hold is not None) == hold

    def counts() -> dict[str, int]:
        return {k: v - before[k] for k, v in _inputs(worker).items()}

    worker.wait_until(lambda: sum(counts().values()) >= calls, WAIT_SECONDS, "every outcome")
    return counts()


def test_held_calls_are_never_stale_unheld_ones_are(kafka_settings, tmp_path, workers):
    # Every retry is queued (no floor): a stale outcome can only be a call before its task.
    settings = worker_settings(kafka_settings, tmp_path, retry_min_score=0.0)
    ensure_topics(settings)
    publish_model(settings, version=1)
    worker = workers(settings)
    frame = add_periods(synthetic_bank_frame(rows=3000, seed=11))
    month = frame[(frame["period"] == "2009-05") & frame["campaign"].between(2, 4)]
    assert len(month) >= 2 * ROWS
    options = ReplayOptions(**ROWS_ONLY, attempts=QueuePolicy.of(settings))
    held_plan = plan_replay(pd.DataFrame(month.iloc[:ROWS]), options)
    unheld_plan = plan_replay(pd.DataFrame(month.iloc[ROWS : 2 * ROWS]), options)
    worker.wait_ready()

    counts = _replay(settings, worker, held_plan, hold=True)
    retries = sum(1 for r in held_plan if r.kind == "outcome") - ROWS
    assert counts == {"closed": ROWS, "recycled": retries, "stale": 0}
    # Each row's last call (its y) closed the task it named.
    finals = {r.call.task_id for r in held_plan if r.final and r.call is not None}
    assert len(finals) == ROWS
    closed = {
        r.headers["task_id"].decode()
        for r in read_topics(settings, [settings.topic_queue], timeout=30)
        if r.value is None and r.headers.get(WITHDRAWAL_HEADER) == b"closed"
    }
    assert finals <= closed

    # The same speed unheld: the retries' calls come before their task.
    counts = _replay(settings, worker, unheld_plan, hold=False)
    assert counts["stale"] > 0 and counts["closed"] < ROWS
