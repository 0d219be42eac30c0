"""Labelled examples from call outcomes: a CallOutcome joined with the ProspectEvent it scored.

The feedback loop appends these rows to bank-full.csv's; their contact period comes from the
event's `occurred_at`, so they sort after the historical data in time-based splits.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from schemas import FEATURES, CallOutcome, ProspectEvent, task_id_for
from trainer.data import COLUMNS


def labelled_examples(
    events: Iterable[ProspectEvent], outcomes: Iterable[CallOutcome]
) -> pd.DataFrame:
    """One row per outcome whose event is known (matched by event_id, else by task_id).

    Columns: FEATURES, duration, y ('yes'/'no'), period ('YYYY-MM'), year. When one event has
    several outcomes, the latest call wins.
    """
    by_event = {e.event_id: e for e in events}
    by_task = {task_id_for(event_id): e for event_id, e in by_event.items()}
    latest: dict[str, tuple[CallOutcome, ProspectEvent]] = {}
    for outcome in outcomes:
        event = by_event.get(outcome.event_id or "") or by_task.get(outcome.task_id or "")
        if event is None:
            continue
        previous = latest.get(event.event_id)
        if previous is None or outcome.called_at >= previous[0].called_at:
            latest[event.event_id] = (outcome, event)
    rows = []
    for outcome, event in latest.values():
        at = event.occurred_at
        rows.append(
            {
                **event.features(),
                "duration": outcome.duration_seconds,
                "y": "yes" if outcome.subscribed else "no",
                "year": at.year,
                "period": f"{at.year:04d}-{at.month:02d}",
            }
        )
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "year", "period"])
    return frame.sort_values("period", kind="stable").reset_index(drop=True)


def with_outcomes(bank: pd.DataFrame, examples: pd.DataFrame) -> pd.DataFrame:
    """Historical rows followed by the feedback rows (chronological order preserved)."""
    if examples.empty:
        return bank
    return pd.concat([bank, examples[bank.columns]], ignore_index=True)


assert set(FEATURES) <= set(COLUMNS)
