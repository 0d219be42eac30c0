"""The message contracts: defined once here and imported everywhere, tests included."""

from schemas.dead_letter import DeadLetter, ErrorKind, FieldError
from schemas.decode import InvalidEvent, decode_outcome, decode_prospect
from schemas.drift_baseline import Distribution, DriftBaseline
from schemas.feature_contract import (
    CATEGORICAL_FEATURES,
    CATEGORIES,
    FEATURES,
    NUMERIC_FEATURES,
    feature_contract_hash,
)
from schemas.manifest import (
    ModelDescription,
    ModelManifest,
    ScoreCalibration,
    TierCutPoints,
    TrainingWindow,
)
from schemas.outcome import CallOutcome
from schemas.prediction import PredictionRecord
from schemas.prospect import MONTHS, POST_CALL_FIELDS, ProspectEvent
from schemas.tasks import PRIORITIES, CallTask, Priority, task_id_for

__all__ = [
    "CATEGORICAL_FEATURES",
    "CATEGORIES",
    "FEATURES",
    "MONTHS",
    "NUMERIC_FEATURES",
    "POST_CALL_FIELDS",
    "PRIORITIES",
    "CallOutcome",
    "CallTask",
    "DeadLetter",
    "Distribution",
    "DriftBaseline",
    "ErrorKind",
    "FieldError",
    "InvalidEvent",
    "ModelDescription",
    "ModelManifest",
    "PredictionRecord",
    "Priority",
    "ProspectEvent",
    "ScoreCalibration",
    "TierCutPoints",
    "TrainingWindow",
    "decode_outcome",
    "decode_prospect",
    "feature_contract_hash",
    "task_id_for",
]
