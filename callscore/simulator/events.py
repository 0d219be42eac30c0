"""Rows of a bank-schema frame as prospect events: what a CRM would publish for each row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from schemas import FEATURES, NUMERIC_FEATURES


def events_from_frame(
    frame: Any,
    prefix: str,
    *,
    event_ids: Sequence[str] | None = None,
    prospect_ids: Sequence[str] | None = None,
    occurred_at: Sequence[datetime] | None = None,
) -> list[dict[str, Any]]:
    """One valid event per row of a bank-schema frame (post-call columns left out).

    Ids default to `<prefix>-<i>` and `cust-<i>`, the time to now; the replay simulator passes
    its own per row so that a replay is idempotent.
    """
    rows = frame[list(FEATURES)].to_dict(orient="records")
    now = datetime.now(UTC)
    return [
        {
            "event_id": event_ids[i] if event_ids is not None else f"{prefix}-{i}",
            "prospect_id": prospect_ids[i] if prospect_ids is not None else f"cust-{i}",
            "occurred_at": (occurred_at[i] if occurred_at is not None else now).isoformat(),
            **{k: (int(v) if k in NUMERIC_FEATURES else v) for k, v in row.items()},
        }
        for i, row in enumerate(rows)
    ]
