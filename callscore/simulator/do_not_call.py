"""Do-not-call entries: a share of the replay's prospects object, and a few withdraw it later.

For round(rate x prospects) of the prospects (drawn with the replay's seed), a `DoNotCallEntry`
on the do-not-call topic (key: the prospect id), requested at a time drawn uniformly from the
`OBJECTION_WITHIN` after the prospect's first event of the replay: some while its task is still
open (the queue withdraws it, `suppressed`), some after its call (its later events are
suppressed). round(lift_rate x entries) of them are lifted (a tombstone: the key, no value)
between `LIFT_AFTER` and `LIFT_AFTER + LIFT_WITHIN` after their entry; later events queue again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

from callscore.simulator.malformed import compact_json
from callscore.simulator.records import DO_NOT_CALL, ScheduledRecord, sort_key
from schemas.decode import decode_do_not_call

OBJECTION_WITHIN = timedelta(days=4)
LIFT_AFTER = timedelta(days=7)
LIFT_WITHIN = timedelta(days=30)
SOURCE = "replay"


def do_not_call_records(
    events: Sequence[ScheduledRecord],
    rate: float,
    lift_rate: float,
    rng: np.random.Generator,
) -> list[ScheduledRecord]:
    """The entries and lifts, in event-time order; `events` are the rows' events in order."""
    first: dict[bytes, int] = {}  # prospect key -> rank of its first event
    for rank, event in enumerate(events):
        first.setdefault(event.key, rank)
    firsts = list(first.values())  # in the order the prospects first appear
    count = round(rate * len(firsts))
    if count == 0:
        return []
    chosen = np.sort(rng.choice(len(firsts), size=count, replace=False))
    objections = _offsets(rng, count, OBJECTION_WITHIN)
    lifted = set(rng.choice(count, size=round(lift_rate * count), replace=False).tolist())
    lifts = _offsets(rng, count, LIFT_WITHIN)
    records = []
    for n, index in enumerate(int(i) for i in chosen):
        rank = firsts[index]
        event = events[rank]
        requested_at = event.at + objections[n]
        records.append(_entry(event, rank, requested_at))
        if n in lifted:
            lift_at = requested_at + LIFT_AFTER + lifts[n]
            records.append(_record(event, rank, lift_at, None))
    return sorted(records, key=sort_key)


def _offsets(rng: np.random.Generator, count: int, within: timedelta) -> list[timedelta]:
    """Whole seconds drawn uniformly from [1 s, within]."""
    seconds = rng.integers(1, int(within.total_seconds()), size=count, endpoint=True)
    return [timedelta(seconds=int(s)) for s in seconds]


def _entry(event: ScheduledRecord, rank: int, requested_at: datetime) -> ScheduledRecord:
    prospect_id = event.key.decode()
    value = compact_json(
        {"prospect_id": prospect_id, "requested_at": requested_at.isoformat(), "source": SOURCE}
    )
    decode_do_not_call(event.key, value)  # the contract must accept what the replay sends
    return _record(event, rank, requested_at, value)


def _record(
    event: ScheduledRecord, rank: int, at: datetime, value: bytes | None
) -> ScheduledRecord:
    return ScheduledRecord(
        at, (rank, DO_NOT_CALL), "do_not_call", event.key, value, event.key.decode(), event.row
    )
