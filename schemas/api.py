"""Bodies of the scorer's HTTP API (docs/openapi.yaml is generated from these and the routes)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.dead_letter import ErrorKind, FieldError
from schemas.manifest import TierCutPoints
from schemas.tasks import CallTask, Priority

# GET /queue?limit=N: how many tasks one answer lists.
QUEUE_LIMIT_DEFAULT = 50
QUEUE_LIMIT_MAX = 1000


class ScoreResult(BaseModel):
    """One scored event: the call task's fields a caller needs, without publishing anything."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    prospect_id: str
    task_id: str = Field(description="uuid5 of event_id, as in the call task.")
    score: float = Field(ge=0.0, le=1.0)
    priority: Priority
    percentile: float = Field(ge=0.0, le=100.0)
    model_version: int = Field(ge=1)

    @classmethod
    def from_task(cls, task: CallTask) -> ScoreResult:
        return cls(**task.model_dump(include=set(cls.model_fields)))


class EventErrors(BaseModel):
    index: int = Field(description="Position in the request list (0 for an object).")
    kind: ErrorKind
    message: str
    field_errors: list[FieldError]


class ValidationErrors(BaseModel):
    error: str
    errors: list[EventErrors] = Field(
        default_factory=list, description="Per-event errors, the first ones only (see truncated)."
    )
    invalid: int = Field(default=0, ge=0, description="How many events are invalid in all.")
    truncated: bool = Field(
        default=False, description="True when fewer entries are listed than events are invalid."
    )


class ApiError(BaseModel):
    error: str


class ServedModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    version: int
    created_at: AwareDatetime
    published_at: AwareDatetime
    action: Literal["publish", "promote"]
    artifact_sha256: str
    metrics: dict[str, float]
    tier_cut_points: TierCutPoints
    loaded_at: AwareDatetime


class Health(BaseModel):
    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    """/readyz: ready when every check of the process is true (a check it does not make is
    absent: the scorer's partitions, the API's mirror of the call queue)."""

    ready: bool
    partitions_assigned: bool | None = Field(
        default=None, description="The scorer owns its partitions (stream and queue)."
    )
    queue_mirrored: bool | None = Field(
        default=None, description="The API has read the call-queue topic to its end."
    )
    model_loaded: bool
    broker_reachable: bool


# POST /queue/claim: how many tasks one request may claim.
CLAIM_MAX = 100


class ClaimRequest(BaseModel):
    """POST /queue/claim: the agent's next calls."""

    model_config = ConfigDict(strict=True, extra="forbid")

    agent: str = Field(min_length=1, max_length=128, description="Who will call them.")
    n: int = Field(default=1, ge=1, le=CLAIM_MAX, description="How many tasks, at most.")
    tier: Priority | None = Field(default=None, description="Only this tier; null: any.")


class ClaimAnswer(BaseModel):
    """POST /queue/claim: the tasks now held for the agent, best first."""

    agent: str
    lease_until: AwareDatetime = Field(
        description="The claims end then at the latest; the calls' outcomes end them sooner."
    )
    tasks: list[CallTask] = Field(description="Each with the claim's claim_id and claimed_by.")
    proposed: int = Field(ge=0, description="Claims proposed to the queue for this request.")
    refused: int = Field(ge=0, description="Of them, taken by another agent first or changed.")
    undecided: int = Field(
        ge=0, description="Of them, not decided within CALLSCORE_CLAIM_WAIT_SECONDS."
    )


class QueueTopAnswer(BaseModel):
    """GET /queue: the best open tasks of the whole call queue, and its counts."""

    tier: Priority | None = Field(description="The tier asked for; null for every tier.")
    limit: int = Field(ge=1, description="At most this many tasks were asked for.")
    tasks: list[CallTask] = Field(
        description="Open tasks that are due (no `not_before`, or one already passed), by "
        "score, highest first; equal scores by task_id."
    )
    open_by_tier: dict[Priority, int] = Field(
        description="Open tasks per tier, all of them, due or not."
    )
    open_total: int = Field(ge=0)
    not_due: int = Field(
        default=0, ge=0, description="Open tasks of the tier(s) asked whose `not_before` is later."
    )
    withdrawals: dict[str, int] = Field(
        description="Open tasks withdrawn since the mirror started reading, by the reason in "
        "their tombstone's `withdrawn` header (closed, recycled, expired, suppressed)."
    )
