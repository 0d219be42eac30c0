"""CallOutcome: what dialers report after a call. Post-call fields are allowed here.

A call ends in one of `DISPOSITIONS`. Only a `reached` call says whether the prospect subscribes
(`subscribed`), so only `reached` outcomes are labels, for the monitor, the trainer and the lake.
The others tell the call queue what to do next (docs/architecture.md, "The call queue"):
`wrong_number` closes the task, `do_not_call` closes it and records the prospect's objection,
and `RECYCLED` dispositions bring the prospect back later, rescored for one more attempt.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

Disposition = Literal[
    "reached", "no_answer", "busy", "voicemail", "callback", "wrong_number", "do_not_call"
]
DISPOSITIONS: tuple[Disposition, ...] = get_args(Disposition)
# Calls that did not reach a decision: the prospect comes back for another attempt.
Recycled = Literal["no_answer", "busy", "voicemail", "callback"]
RECYCLED: tuple[Recycled, ...] = get_args(Recycled)

# What the validator below enforces, for producers in other languages (JSON Schema if/then).
_RULES: dict[str, Any] = {
    "allOf": [
        {
            "if": {
                "anyOf": [
                    {"not": {"required": ["disposition"]}},
                    {"properties": {"disposition": {"const": "reached"}}},
                ]
            },
            "then": {"required": ["subscribed", "duration_seconds"]},
            "else": {"properties": {"subscribed": {"not": {"const": True}}}},
        },
        {
            "if": {
                "required": ["disposition"],
                "properties": {"disposition": {"const": "callback"}},
            },
            "then": {"required": ["callback_at"]},
            "else": {"properties": {"callback_at": {"type": "null"}}},
        },
    ]
}


class CallOutcome(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="ignore", allow_inf_nan=False, frozen=True, json_schema_extra=_RULES
    )

    event_id: str | None = Field(default=None, min_length=1, max_length=128)
    task_id: str | None = Field(default=None, min_length=1, max_length=128)
    prospect_id: str = Field(min_length=1, max_length=128)
    called_at: AwareDatetime = Field(strict=False)
    disposition: Disposition = Field(
        default="reached",
        description="How the call ended; only 'reached' calls are labels (the default, so an "
        "outcome without it is a reached call).",
    )
    subscribed: bool | None = Field(
        default=None, description="Required when the call reached the prospect; never true else."
    )
    duration_seconds: int = Field(
        default=0, ge=0, le=86_400, description="Required when the call reached the prospect."
    )
    callback_at: AwareDatetime | None = Field(
        default=None,
        strict=False,
        description="When the prospect asked to be called back: required with 'callback', "
        "absent otherwise, not before called_at.",
    )
    notes: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _consistent(self) -> CallOutcome:
        if self.event_id is None and self.task_id is None:
            raise ValueError("an outcome needs 'event_id' or 'task_id' to find the scored event")
        if self.reached:
            missing = [
                f for f in ("subscribed", "duration_seconds") if f not in self.model_fields_set
            ]
            if missing or self.subscribed is None:
                raise ValueError(
                    f"a reached call needs {' and '.join(missing or ['subscribed'])} "
                    "(or another 'disposition')"
                )
        elif self.subscribed:
            raise ValueError(
                f"'subscribed' true needs disposition 'reached', not {self.disposition!r}"
            )
        if self.disposition == "callback":
            if self.callback_at is None:
                raise ValueError("disposition 'callback' needs 'callback_at'")
            if self.callback_at < self.called_at:
                raise ValueError("'callback_at' must not be before 'called_at'")
        elif self.callback_at is not None:
            raise ValueError(
                f"'callback_at' is only for disposition 'callback', not {self.disposition!r}"
            )
        return self

    @property
    def reached(self) -> bool:
        """The call reached the prospect: a label."""
        return self.disposition == "reached"
