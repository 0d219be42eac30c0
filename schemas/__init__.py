"""The message contracts: defined once here and imported everywhere, tests included."""

from schemas.claim import Claim
from schemas.dead_letter import DeadLetter, ErrorKind, FieldError
from schemas.decode import InvalidEvent, decode_outcome, decode_prospect
from schemas.do_not_call import DoNotCallEntry
from schemas.drift_baseline import Distribution, DriftBaseline
from schemas.feature_contract import (
    CATEGORICAL_FEATURES,
    CATEGORIES,
    FEATURE_COLUMN_PREFIX,
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
from schemas.outcome import DISPOSITIONS, RECYCLED, CallOutcome, Disposition, Recycled
from schemas.prediction import PredictionRecord
from schemas.prospect import MONTHS, POST_CALL_FIELDS, ProspectEvent
from schemas.tasks import (
    PRIORITIES,
    WITHDRAWAL_HEADER,
    WITHDRAWALS,
    CallTask,
    Priority,
    Withdrawal,
    join_key,
    task_id_for,
)

__all__ = [
    "CATEGORICAL_FEATURES",
    "CATEGORIES",
    "DISPOSITIONS",
    "FEATURES",
    "FEATURE_COLUMN_PREFIX",
    "MONTHS",
    "NUMERIC_FEATURES",
    "POST_CALL_FIELDS",
    "PRIORITIES",
    "RECYCLED",
    "WITHDRAWALS",
    "WITHDRAWAL_HEADER",
    "CallOutcome",
    "CallTask",
    "Claim",
    "DeadLetter",
    "Disposition",
    "Distribution",
    "DoNotCallEntry",
    "DriftBaseline",
    "ErrorKind",
    "FieldError",
    "InvalidEvent",
    "ModelDescription",
    "ModelManifest",
    "PredictionRecord",
    "Priority",
    "ProspectEvent",
    "Recycled",
    "ScoreCalibration",
    "TierCutPoints",
    "TrainingWindow",
    "Withdrawal",
    "decode_outcome",
    "decode_prospect",
    "feature_contract_hash",
    "join_key",
    "task_id_for",
]
