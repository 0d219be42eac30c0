"""Who is who in a replay: the UCI rows have no customer id, so the replay makes one up.

Every row is a contact of a prospect. Without repeats each row is its own prospect
(`<prefix>-prospect-<row>`); with `repeat_rate` a share of rows become a later contact of an
earlier row's prospect: each row, in time order, is a repeat with probability `repeat_rate`, and
then takes the prospect of a row drawn uniformly from the contacts of the `REPEAT_WITHIN` before
it (so some repeats come before the earlier call's outcome, some while the prospect cools down
after it, some after that). A repeat keeps its own features: it is the later row's contact.

The mapping is computed over the whole file with a fixed generator, not over the replayed
months with the replay's seed: a row's prospect is a property of the file, like a CRM's customer
id, the same in every replay whatever its window or seed (so ids stay idempotent).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

# How far back a repeated contact looks for the prospect it belongs to (event time).
REPEAT_WITHIN = timedelta(days=60)
# The mapping's own generator: fixed, so that the prospects do not depend on the replay's seed.
_MAPPING_SEED = 2008


def prospect_rows(
    numbers: Sequence[int], times: Sequence[datetime], repeat_rate: float
) -> dict[int, int]:
    """Row number -> the row number naming its prospect (itself, or an earlier row's prospect)."""
    if repeat_rate == 0:
        return {n: n for n in numbers}
    order = sorted(range(len(numbers)), key=lambda i: (times[i], numbers[i]))
    stamps = np.array([times[i].timestamp() for i in order])
    draws = np.random.default_rng(_MAPPING_SEED).random((len(order), 2))
    within = REPEAT_WITHIN.total_seconds()
    owner = list(range(len(order)))  # by position in time order
    for k in range(len(order)):
        if draws[k, 0] >= repeat_rate:
            continue
        first = int(np.searchsorted(stamps, stamps[k] - within, side="left"))
        if first >= k:
            continue  # no earlier contact within reach: a prospect of its own
        owner[k] = owner[first + int(draws[k, 1] * (k - first))]
    return {numbers[order[k]]: numbers[order[owner[k]]] for k in range(len(order))}
