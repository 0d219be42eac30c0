"""The model `callscore train` ships, trained by the bench: the reference selected configuration
(calibrated random forest with the contact-period effects) fitted by the trainer's own
`fit_final`, on ../shared/data when it exists, else on synthetic rows of the same size.

No search and no model card: the configuration was chosen once (trainer/candidates.py
REFERENCE_SELECTED); only its cost per prediction matters here. The artifact is cached under
bench/results/ keyed by the data's sha256, the scikit-learn version and the configuration, so a
rerun loads it in a second.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import sklearn

from bench.results import RESULTS
from core.settings import Settings
from registry.artifact import ArtifactError, ModelArtifact, dump_artifact, load_artifact
from trainer.candidates import REFERENCE_CONFIGS, REFERENCE_SELECTED
from trainer.data import SHARED_COPY, add_periods, load_bank, sha256_hex
from trainer.evaluation import score_metrics
from trainer.final import HOLDOUT_METRIC_PREFIX, fit_final
from trainer.metadata import build_metadata, window_of
from trainer.synthetic import synthetic_bank_frame

# bank-full.csv's size: synthetic data of the same size trains a forest of similar cost.
SYNTHETIC_ROWS = 45_211
SYNTHETIC_SEED = 11
# The product's defaults, so the bench's model is tiered and named like a trained one.
DEFAULT_MODEL_NAME: str = Settings.model_fields["model_name"].default
TIER_FRACTIONS = (
    Settings.model_fields["tier_high_fraction"].default,
    Settings.model_fields["tier_medium_fraction"].default,
)


@dataclass(frozen=True)
class BankData:
    frame: pd.DataFrame  # with `period`
    sha256: str
    source: str  # "real: <path>" or "synthetic: ..."

    @property
    def real(self) -> bool:
        return self.source.startswith("real")


def bank_data(path: Path | None = None) -> BankData:
    """bank-full from `path`, else from ../shared/data, else synthetic rows (said so in
    `source`)."""
    path = path or (SHARED_COPY if SHARED_COPY.is_file() else None)
    if path is not None:
        frame, sha = load_bank(path)
        return BankData(frame, sha, f"real: {path}")
    frame = add_periods(synthetic_bank_frame(rows=SYNTHETIC_ROWS, seed=SYNTHETIC_SEED))
    sha = sha256_hex(pd.util.hash_pandas_object(frame).to_numpy().tobytes())
    return BankData(
        frame, sha, f"synthetic: trainer.synthetic, {SYNTHETIC_ROWS} rows (no ../shared/data)"
    )


def _cache_path(data: BankData) -> Path:
    config = REFERENCE_CONFIGS[REFERENCE_SELECTED]
    key = hashlib.sha256(f"{data.sha256}|{sklearn.__version__}|{config.label}".encode())
    return RESULTS / f"production-model-{key.hexdigest()[:16]}.joblib"


def production_artifact(
    data: BankData, log: Callable[[str], None] = print
) -> tuple[ModelArtifact, bool]:
    """(the artifact as version 1, whether it came from the cache)."""
    path = _cache_path(data)
    if path.is_file():
        try:
            return load_artifact(path.read_bytes()), True
        except ArtifactError as exc:  # pickled by an older product (a module renamed since)
            log(f"cached production model unreadable ({exc}): training it again")
    log(f"training the production model on {data.source} (cached at {path})")
    artifact = train(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dump_artifact(artifact))
    return artifact, False


def train(data: BankData) -> ModelArtifact:
    """What `callscore train --search reference` builds, less the backtest and the card."""
    config = REFERENCE_CONFIGS[REFERENCE_SELECTED]
    final = fit_final(data.frame, config)
    holdout = score_metrics(final.holdout_y, final.holdout_scores)
    metadata = build_metadata(
        model_name=DEFAULT_MODEL_NAME,
        version=1,
        candidate=config.candidate,
        data_rows=len(data.frame),
        data_sha256=data.sha256,
        window=window_of(data.frame),
        metrics={HOLDOUT_METRIC_PREFIX + k: v for k, v in holdout.items()},
        validation=final.holdout,
        validation_scores=final.holdout_scores,
        tier_fractions=TIER_FRACTIONS,
        reason="bench: the reference selected configuration",
    )
    return ModelArtifact(final.pipeline, metadata)


def as_version(artifact: ModelArtifact, version: int, model_name: str) -> ModelArtifact:
    """The same fitted pipeline announced as another version (a reload needs a new version)."""
    metadata = artifact.metadata.model_copy(
        update={"version": version, "model_name": model_name, "created_at": datetime.now(UTC)}
    )
    return ModelArtifact(artifact.pipeline, metadata)
