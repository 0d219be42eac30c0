"""CallTask: what dialer systems consume, one per prospect event that opened a task.

The call queue (`call-queue`, compacted, keyed by prospect_id) holds each prospect's open task or
a tombstone; its withdrawal reasons are `WITHDRAWALS`, sent in the `withdrawn` header.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Priority = Literal["high", "medium", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "medium", "low")
# closed: called (reached, wrong number, or the attempts used up); recycled: called without a
# decision, the prospect comes back later as a new task; expired; suppressed: do-not-call.
Withdrawal = Literal["closed", "recycled", "expired", "suppressed"]
WITHDRAWALS: tuple[Withdrawal, ...] = ("closed", "recycled", "expired", "suppressed")
WITHDRAWAL_HEADER = "withdrawn"

# Fixed namespace: task ids must be stable across processes, versions and replays.
_TASK_NAMESPACE = uuid.UUID("6f1c1a52-52a5-4c2e-9d7e-0f0c8b8f3a11")


def task_id_for(event_id: str) -> str:
    """Derive the task id from the event id alone, so replays and rescoring keep the same id."""
    return str(uuid.uuid5(_TASK_NAMESPACE, event_id))


def join_key(identifier: str | None) -> int | None:
    """An event or task id as a 64-bit integer (BLAKE2b), what labelled history joins on: an
    integer column costs 8 bytes a row where the id costs ~40, so millions of calls join in
    memory. Two ids share a key with probability ~n²/2⁶⁵ (5·10⁻⁷ at 4.5 M ids)."""
    if identifier is None:
        return None
    digest = hashlib.blake2b(identifier.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class CallTask(BaseModel):
    model_config = ConfigDict(frozen=True)

    task_id: str = Field(description="uuid5 of event_id: dialers deduplicate on it.")
    event_id: str
    prospect_id: str
    score: float = Field(ge=0.0, le=1.0, description="Calibrated P(subscribes a term deposit).")
    priority: Priority
    percentile: float = Field(ge=0.0, le=100.0, description="Rank among validation scores.")
    model_version: int = Field(ge=1)
    scored_at: AwareDatetime
    expires_at: AwareDatetime | None = Field(
        default=None,
        description="Event time after which the task is withdrawn if not called "
        "(the event's occurred_at + CALLSCORE_TASK_TTL).",
    )
    supersedes: str | None = Field(
        default=None, description="task_id of the prospect's open task this one replaces."
    )
    not_before: AwareDatetime | None = Field(
        default=None, description="Not due before this time (a callback or a retry's delay)."
    )
    attempt: int | None = Field(
        default=None, ge=1, description="The contact's number in this campaign (its `campaign`)."
    )
    retry_of: str | None = Field(
        default=None, description="task_id of the call this one retries (after no decision)."
    )
    claim_id: str | None = Field(
        default=None, description="The granted claim that holds the prospect (POST /queue/claim)."
    )
    claimed_by: str | None = Field(default=None, description="The agent who holds it.")
    lease_until: AwareDatetime | None = Field(
        default=None, description="The hold ends then at latest; after it, anyone may claim."
    )
