"""CallOutcome: what dialers report after a call. Post-call fields are allowed here."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class CallOutcome(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)

    event_id: str | None = Field(default=None, min_length=1, max_length=128)
    task_id: str | None = Field(default=None, min_length=1, max_length=128)
    prospect_id: str = Field(min_length=1, max_length=128)
    called_at: AwareDatetime = Field(strict=False)
    subscribed: bool
    duration_seconds: int = Field(ge=0, le=86_400)
    notes: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _needs_a_reference(self) -> CallOutcome:
        if self.event_id is None and self.task_id is None:
            raise ValueError("an outcome needs 'event_id' or 'task_id' to find the scored event")
        return self
