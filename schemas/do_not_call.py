"""DoNotCallEntry: a prospect who objected to marketing calls (GDPR art. 21, Lista Robinson).

The do-not-call topic is compacted and keyed by `prospect_id`: the newest record per key is the
prospect's entry, and a tombstone (a record with no value) lifts it. While an entry stands the
scorers withdraw the prospect's open task and queue, score and log nothing for it.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class DoNotCallEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    prospect_id: str = Field(
        min_length=1, max_length=128, description="The prospect; also the record's key."
    )
    requested_at: AwareDatetime = Field(strict=False, description="When the objection was made.")
    source: str = Field(
        default="",
        max_length=200,
        description="Where it came from (e.g. 'lista-robinson', 'agent', 'web-form').",
    )
