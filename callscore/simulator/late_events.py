"""Late events: a share of the rows' events sent again, late, dated before the event they copy.

A CRM that re-sends an older snapshot of a prospect (a batch export, a retried sync) delivers an
event the scorer has already seen a newer one of. Each late copy has its own event id
(`<event id>-late`: it is a record of its own, not a redelivery), the row's features, and is
dated `LATE_BY` before the row's event and published `LATE_BY` after it, so when it arrives the
prospect's newest event is newer than it: the call queue counts it `late` (or `suppressed`,
`cooling_down`) and opens no task.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from callscore.simulator.malformed import compact_json
from callscore.simulator.records import LATE_EVENT, ScheduledRecord, sort_key

LATE_BY = timedelta(days=1)
LATE_SUFFIX = "-late"


def late_events(
    events: Sequence[ScheduledRecord],
    by_rank: Sequence[dict[str, Any]],
    rate: float,
    rng: np.random.Generator,
) -> list[ScheduledRecord]:
    """round(rate x events) late copies of the rows' events, in event-time order."""
    count = round(rate * len(events))
    if count == 0:
        return []
    ranks = np.sort(rng.choice(len(events), size=count, replace=False))
    late = []
    for rank in (int(r) for r in ranks):
        original = events[rank]
        event_id = f"{original.record_id}{LATE_SUFFIX}"
        body = {
            **by_rank[rank],
            "event_id": event_id,
            "occurred_at": (original.at - LATE_BY).isoformat(),
        }
        late.append(
            ScheduledRecord(
                original.at + LATE_BY,
                (rank, LATE_EVENT),
                "event",
                original.key,
                compact_json(body),
                event_id,
                original.row,
                late=True,
            )
        )
    return sorted(late, key=sort_key)
