"""A prospect's entry in the call queue: what the rules need to know about it, and nothing else.

Kept per prospect by the replica that owns the prospect's partition of the queue's input topic,
and written to the compacted state changelog (Settings.topic_queue_state) in the same batch as
the queue change it goes with, so a replica taking the partition over reads it back.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas import CallTask


class ProspectEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    prospect_id: str = Field(min_length=1, max_length=128)
    open_task: CallTask | None = Field(default=None, description="The task a dialer may call.")
    newest_event_at: AwareDatetime | None = Field(
        default=None, description="occurred_at of the newest event queued (open or closed since)."
    )
    newest_event_id: str | None = Field(
        default=None, description="Its event_id: the same event again is a duplicate."
    )
    newest_seen_at: AwareDatetime | None = Field(
        default=None,
        description="occurred_at of the newest event of the prospect, queued or not: the "
        "partition's stream time is the newest of these, so a restart resumes it exactly.",
    )
    reached_at: AwareDatetime | None = Field(
        default=None, description="called_at of the newest call that reached the prospect."
    )
    do_not_call: bool = Field(default=False, description="An objection stands: queue nothing.")
