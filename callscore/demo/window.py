"""Which months the demo replays, what that plan holds, and how fast it must go.

The replay takes the latest months holding about `--prospects` rows, never more than half of
the data: the months before it are the trainer's base data, so no row is used twice. It is
replayed with attempts (callscore/simulator/attempts.py): a row with `campaign` = c is up to
CALLSCORE_MAX_ATTEMPTS calls, so the plan is counted under the run's queue policy, as
`callscore simulate` makes it. The retries the call queue sends are not in the plan: the queue
publishes them itself, on the prospects topic.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from callqueue.rules import QueuePolicy
from callscore.demo.options import DemoOptions
from callscore.simulator.plan import ReplayOptions, plan_replay
from callscore.simulator.records import count_plan
from core.errors import CallscoreError

# The replay never takes more than this share of the rows: the rest is the model's base data.
MAX_REPLAY_SHARE = 0.5


@dataclass(frozen=True)
class ReplayWindow:
    options: ReplayOptions
    records: int  # everything the plan publishes
    prospects: int  # prospect records (valid and malformed): what must be scored or dead-lettered
    valid: int  # the valid ones: the rows' events and their late copies
    outcomes: int  # outcome records (each call's, and the malformed ones)
    first: str
    last: str
    speedup: float  # event-time seconds per wall second, so the replay takes `replay_seconds`


def replay_start(frame: pd.DataFrame, prospects: int) -> str:
    """The latest month from which the replay holds at least `prospects` rows (to the end of
    the data), leaving at least half of the rows before it for the base model."""
    counts = frame["period"].astype(str).value_counts().sort_index()
    most = len(frame) * MAX_REPLAY_SHARE
    wanted = min(prospects, int(most))
    replayed = 0
    start = str(counts.index[-1])
    for period, rows in reversed(list(counts.items())):
        if replayed + int(rows) > most and replayed > 0:
            break
        replayed += int(rows)
        start = str(period)
        if replayed >= wanted:
            break
    if start == str(counts.index[0]):
        raise CallscoreError("the data covers a single month: nothing is left to train on")
    return start


def plan_window(
    frame: pd.DataFrame, options: DemoOptions, attempts: QueuePolicy | None
) -> ReplayWindow:
    """The replay of `callscore simulate` as the demo will run it, counted in advance (with the
    replay's defaults for the extras that make every rule of the call queue fire); `attempts`:
    the queue's policy (QueuePolicy.of the run's settings), None for one call per row."""
    start = options.start or replay_start(frame, options.prospects)
    replay = ReplayOptions(
        start=start,
        outcome_delay=options.outcome_delay,
        bad_rate=options.bad_rate,
        attempts=attempts,
    )
    plan = plan_replay(frame, replay)
    counts = count_plan(plan).values()
    span = (plan[-1].at - plan[0].at).total_seconds()
    return ReplayWindow(
        options=replay,
        records=len(plan),
        prospects=sum(c.prospect_records for c in counts),
        valid=sum(c.valid_events for c in counts),
        outcomes=sum(c.outcomes + c.bad_outcomes for c in counts),
        first=start,
        last=plan[-1].period,
        speedup=max(span / options.replay_seconds, 1.0),
    )
