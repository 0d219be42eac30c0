"""A prospect's entry in the call queue: what the rules need to know about it, and nothing else.

Kept per prospect by the replica that owns the prospect's partition of the queue's input topic,
and written to the compacted state changelog (Settings.topic_queue_state) in the same batch as
the queue change it goes with, so a replica taking the partition over reads it back.

A plain frozen dataclass with slots, not a pydantic model: the rules replace an entry once or
twice per input, and `dataclasses.replace` costs a fraction of `model_copy` (the queue's share of
the scorer's time, docs/streamer.md). Its JSON goes through a pydantic TypeAdapter, which
validates every field when a changelog record is read back (`entry_from_json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, TypeAdapter

from schemas import CallTask


@dataclass(frozen=True, slots=True)
class ProspectEntry:
    prospect_id: Annotated[str, Field(min_length=1, max_length=128)]
    # The task a dialer may call, and the features its event was scored on (a retry after a
    # call without a decision is that event again, one attempt later).
    open_task: CallTask | None = None
    open_features: dict[str, Any] | None = None
    # occurred_at of the newest event queued (open or closed since), and its event_id: the same
    # event again is a duplicate.
    newest_event_at: AwareDatetime | None = None
    newest_event_id: str | None = None
    # occurred_at of the newest event of the prospect, queued or not: the partition's stream
    # time is the newest of these, so a restart resumes it exactly.
    newest_seen_at: AwareDatetime | None = None
    # called_at of the newest call that reached the prospect.
    reached_at: AwareDatetime | None = None
    # An objection stands: queue nothing.
    do_not_call: bool = False
    # The input topic's offset of the input this entry changed at last: every input of the
    # partition up to it is applied to the entry, so one up to it again is a redelivery (a batch
    # applied again after its commit failed) and must change nothing. An outcome that came
    # before its event was stale the first time; applied again after the event, it would close
    # the event's task.
    applied_offset: int | None = None


_ENTRY = TypeAdapter(ProspectEntry)


def entry_json(entry: ProspectEntry) -> bytes:
    return _ENTRY.dump_json(entry)


def entry_from_json(raw: bytes) -> ProspectEntry:
    """The entry of a changelog record; pydantic's ValidationError when it is not one."""
    return _ENTRY.validate_json(raw)
