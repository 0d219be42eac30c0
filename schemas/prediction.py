"""PredictionRecord: one line of the prediction log, written with every call task.

It is the audit of what the model saw and said, and the left side of the outcome join: an
outcome (`CallOutcome`) names the event or task it reports on; this record holds the features the
model scored, the score, the tier and the model version.
"""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.feature_contract import FEATURES
from schemas.outcome import Recycled
from schemas.tasks import Priority


class PredictionRecord(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    event_id: str = Field(min_length=1, max_length=128)
    task_id: str = Field(description="uuid5 of event_id, as in the call task.")
    prospect_id: str = Field(min_length=1, max_length=128)
    occurred_at: AwareDatetime = Field(description="The prospect event's own time.")
    features: dict[str, Any] = Field(description="The event's FEATURES, as the model saw them.")
    score: float = Field(ge=0.0, le=1.0)
    priority: Priority
    percentile: float = Field(ge=0.0, le=100.0)
    model_version: int = Field(ge=1)
    scored_at: AwareDatetime
    not_before: AwareDatetime | None = Field(default=None, description="As in the event.")
    retry_of: str | None = Field(default=None, description="As in the event.")
    retry_reason: Recycled | None = Field(default=None, description="As in the event.")

    @model_validator(mode="after")
    def _every_feature(self) -> PredictionRecord:
        if set(self.features) != set(FEATURES):
            missing = sorted(set(FEATURES) - set(self.features))
            extra = sorted(set(self.features) - set(FEATURES))
            raise ValueError(f"features must be FEATURES: missing {missing}, extra {extra}")
        return self
