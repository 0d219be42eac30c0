"""ProspectEvent: what producers publish before a call is placed.

The feature fields and their value sets are those of UCI bank-full.csv (see bank-names.txt),
minus the post-call fields. Every other module derives its feature lists from this class.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from schemas.outcome import Recycled

# Known only after the call: accepting them would leak the outcome into the score.
POST_CALL_FIELDS: tuple[str, ...] = ("duration", "y")

Job = Literal[
    "admin.",
    "unknown",
    "unemployed",
    "management",
    "housemaid",
    "entrepreneur",
    "student",
    "blue-collar",
    "self-employed",
    "retired",
    "technician",
    "services",
]
Marital = Literal["married", "divorced", "single"]
Education = Literal["unknown", "secondary", "primary", "tertiary"]
YesNo = Literal["yes", "no"]
Contact = Literal["unknown", "telephone", "cellular"]
Month = Literal["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
Poutcome = Literal["unknown", "other", "failure", "success"]

MONTHS: tuple[str, ...] = Month.__args__  # type: ignore[attr-defined]

# Identifiers, timestamps and scheduling that travel with the event but are not model inputs.
EVENT_METADATA_FIELDS: tuple[str, ...] = (
    "event_id",
    "prospect_id",
    "occurred_at",
    "not_before",
    "retry_of",
    "retry_reason",
)


class ProspectEvent(BaseModel):
    """A customer the telemarketing team might call, with everything known before dialing."""

    # strict: producers in other languages must send numbers as JSON numbers, not strings.
    model_config = ConfigDict(
        strict=True,
        extra="ignore",
        allow_inf_nan=False,
        frozen=True,
        json_schema_extra={"not": {"anyOf": [{"required": [f]} for f in POST_CALL_FIELDS]}},
    )

    event_id: str = Field(
        min_length=1, max_length=128, description="Producer-chosen idempotency key."
    )
    prospect_id: str = Field(min_length=1, max_length=128, description="Customer identifier.")
    # JSON has no datetime type: ISO-8601 strings are parsed (strict mode would refuse them).
    occurred_at: AwareDatetime = Field(strict=False, description="ISO-8601 with a timezone.")

    age: int = Field(ge=18, le=100)
    job: Job
    marital: Marital = Field(description='"divorced" means divorced or widowed.')
    education: Education
    default: YesNo = Field(description="Has credit in default?")
    balance: int = Field(
        ge=-10_000_000, le=100_000_000, description="Average yearly balance, in euros."
    )
    housing: YesNo = Field(description="Has a housing loan?")
    loan: YesNo = Field(description="Has a personal loan?")
    contact: Contact = Field(description="Contact communication type.")
    day: int = Field(ge=1, le=31, description="Planned contact day of the month.")
    month: Month = Field(description="Planned contact month.")
    campaign: int = Field(
        ge=1, le=1000, description="Contacts in this campaign, including the planned one."
    )
    pdays: int = Field(
        ge=-1,
        le=10_000,
        description="Days since the last contact of a previous campaign; -1 = never contacted.",
    )
    previous: int = Field(ge=0, le=10_000, description="Contacts before this campaign.")
    poutcome: Poutcome = Field(description="Outcome of the previous campaign.")
    # Scheduling, not features: when the contact is due, and what it retries.
    not_before: AwareDatetime | None = Field(
        default=None,
        strict=False,
        description="The contact is not due before this time (a callback, or the delay after an "
        "unanswered call): its task waits in the queue until then.",
    )
    retry_of: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Set by the call queue on a retry: the task_id of the call that did not "
        "reach a decision.",
    )
    retry_reason: Recycled | None = Field(
        default=None, description="Set by the call queue on a retry: how that call ended."
    )

    @model_validator(mode="before")
    @classmethod
    def _reject_post_call_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in POST_CALL_FIELDS:
                if name in data:
                    raise PydanticCustomError(
                        "post_call_field",
                        "'{field}' is a post-call field: it is only known after the call and "
                        "would leak the outcome into the score; remove it from the event",
                        {"field": name},
                    )
        return data

    def features(self) -> dict[str, Any]:
        """The model inputs of this event, keyed by feature name."""
        return self.model_dump(exclude=set(EVENT_METADATA_FIELDS))
