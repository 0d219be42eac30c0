"""Claim: an agent's exclusive hold on a prospect's open task, for a lease.

`callscore api` proposes claims (`POST /queue/claim`); the scorer replica that owns the
prospect's queue partition decides them (callqueue/rules.py), one at a time, so two agents
never hold the same prospect: a claim is granted when the task it names is open, due and not
held by another claim whose lease runs past the new claim's `requested_at`. A granted claim
shows on the task in `call-queue` (`claim_id`, `claimed_by`, `lease_until`) and ends with the
task's outcome (or withdrawal), or when its lease runs out.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class Claim(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    claim_id: str = Field(min_length=1, max_length=128, description="Unique per proposal.")
    prospect_id: str = Field(min_length=1, max_length=128)
    task_id: str = Field(min_length=1, max_length=128, description="The open task it claims.")
    agent: str = Field(min_length=1, max_length=128, description="Who will call.")
    requested_at: AwareDatetime = Field(strict=False, description="The API's clock.")
    lease_until: AwareDatetime = Field(strict=False, description="The hold ends then at latest.")

    @model_validator(mode="after")
    def _a_lease(self) -> Claim:
        if self.lease_until <= self.requested_at:
            raise ValueError("'lease_until' must be after 'requested_at'")
        return self
