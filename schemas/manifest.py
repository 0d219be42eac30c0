"""ModelManifest: one record on the versioned model topic, keyed by model name.

Every field is signed (Ed25519, `signing_payload` is the one canonical serialisation). Each record
carries a strictly increasing `sequence` per model name: readers serve the valid record with the
highest sequence and refuse one that is not above the newest they accepted (a replay), so a
promotion or rollback is a new signed record naming the version to serve.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.drift_baseline import DriftBaseline

HEX_SHA256 = r"^[0-9a-f]{64}$"


class TierCutPoints(BaseModel):
    """score >= high -> 'high'; score >= medium -> 'medium'; else 'low'."""

    model_config = ConfigDict(frozen=True)

    high: float = Field(ge=0.0, le=1.0)
    medium: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> TierCutPoints:
        if self.medium > self.high:
            raise ValueError("tier cut points must satisfy medium <= high")
        return self


class ScoreCalibration(BaseModel):
    """calibrated = sigmoid(slope * logit(score) + intercept), refitted on recent outcomes."""

    model_config = ConfigDict(frozen=True)

    slope: float = Field(gt=0, description="Positive, so the ranking and the tiers keep order.")
    intercept: float
    outcomes: int = Field(ge=1, description="Labelled outcomes it was fitted on.")


class TrainingWindow(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: str = Field(pattern=r"^\d{4}-\d{2}$", description="First contact period, YYYY-MM.")
    end: str = Field(pattern=r"^\d{4}-\d{2}$", description="Last contact period, YYYY-MM.")
    rows: int = Field(ge=1)


class ModelDescription(BaseModel):
    """What a trained model is: its identity, runtime, contract, quality and tiers.

    Shared by the artifact's own metadata and the manifest record that announces it.
    """

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model_name: str = Field(min_length=1, max_length=100)
    version: int = Field(ge=1, description="Increases monotonically per model name.")
    created_at: AwareDatetime = Field(description="When the model was trained.")
    sklearn_version: str = Field(min_length=1)
    python_version: str = Field(min_length=1)
    feature_contract_hash: str = Field(pattern=HEX_SHA256)
    metrics: dict[str, float] = Field(default_factory=dict)
    tier_cut_points: TierCutPoints
    training_window: TrainingWindow
    reason: str = Field(
        default="", max_length=500, description="Why this version exists (trigger or command)."
    )
    drift_baseline: DriftBaseline | None = Field(
        default=None, description="Training distribution of the score and of every feature."
    )
    calibration: ScoreCalibration | None = Field(
        default=None, description="Online recalibration applied on top of the pipeline."
    )
    labelled_until: AwareDatetime | None = Field(
        default=None,
        description="Newest call outcome (event time) in the training data; None: base data only.",
    )

    def description(self) -> dict[str, object]:
        """The ModelDescription fields of this object, to build another description from."""
        return {name: getattr(self, name) for name in ModelDescription.model_fields}


class ModelManifest(ModelDescription):
    # Unknown fields are refused: a record carries nothing its signature does not cover.
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", extra="forbid")

    published_at: AwareDatetime = Field(description="When this record was written.")
    action: Literal["publish", "promote"] = Field(
        default="publish",
        description="publish: a new version; promote: serve `version` again (rollback/forward).",
    )
    sequence: int = Field(
        ge=1,
        description="Strictly increasing per model name (the single publisher uses the topic's "
        "max + 1); a record not above the newest accepted one is a replay.",
    )
    artifact_sha256: str = Field(pattern=HEX_SHA256)
    key_id: str = Field(
        pattern=r"^[0-9a-f]{16}$",
        description="Which Ed25519 public key verifies the signature: first 16 hex of the "
        "sha256 of the raw public key.",
    )
    signature: str = Field(
        pattern=r"^[0-9a-f]{128}$",
        description="Ed25519 signature of signing_payload() (every other field), hex.",
    )
    artifact_inline: bytes | None = Field(
        default=None, description="The joblib artifact (compressed), base64 in JSON."
    )
    artifact_uri: str | None = Field(default=None, description="file:// URI of the artifact.")

    @model_validator(mode="after")
    def _one_artifact_location(self) -> ModelManifest:
        if (self.artifact_inline is None) == (self.artifact_uri is None):
            raise ValueError("a manifest carries exactly one of artifact_inline or artifact_uri")
        return self

    def signing_payload(self) -> bytes:
        """What the signature covers: every field of the record but the signature itself, as
        JSON with sorted keys and no whitespace (the one canonical serialisation)."""
        fields = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(
            fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
