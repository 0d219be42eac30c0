"""Pure batch scoring: raw Kafka records -> call tasks and dead letters. No I/O here.

Used by the stream (one call per batch) and by `POST /score`, so both score identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from core.dead_letters import dead_letter_for
from registry.artifact import ModelArtifact
from schemas import FEATURES, CallTask, DeadLetter, ModelManifest, ProspectEvent, task_id_for
from schemas.decode import InvalidEvent, decode_prospect


@dataclass(frozen=True)
class Incoming:
    """One consumed record, as the scorer needs it."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None = None  # Kafka record timestamp, seconds since the epoch


@dataclass(frozen=True)
class ServedModel:
    """A verified, loaded model and the manifest record that announced it. Its artifact is
    compiled for serving (registry/serving_plan.py) here, once per load."""

    artifact: ModelArtifact
    manifest: ModelManifest
    record_offset: int
    loaded_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "artifact", self.artifact.compiled())

    @property
    def version(self) -> int:
        return self.manifest.version


def decode_batch(
    messages: Sequence[Incoming], max_bytes: int, now: datetime
) -> tuple[list[tuple[Incoming, ProspectEvent]], list[DeadLetter]]:
    """Split a batch into valid events and dead letters; every message lands in exactly one."""
    valid: list[tuple[Incoming, ProspectEvent]] = []
    dead: list[DeadLetter] = []
    for message in messages:
        try:
            valid.append((message, decode_prospect(message.value, max_bytes)))
        except InvalidEvent as exc:
            dead.append(dead_letter_for(message, exc, max_bytes, now))
    return valid, dead


def feature_columns(events: Sequence[ProspectEvent]) -> dict[str, list[Any]]:
    """The model input for a batch, built once: the contract's columns, one value per event."""
    return {name: [getattr(event, name) for event in events] for name in FEATURES}


def feature_frame(events: Sequence[ProspectEvent]) -> pd.DataFrame:
    """The model input as a DataFrame: one row per event, the contract's columns."""
    return pd.DataFrame(feature_columns(events), columns=list(FEATURES))


def score_events(
    events: Sequence[ProspectEvent], model: ServedModel, now: datetime
) -> list[CallTask]:
    """One predict_proba call for the whole batch, by exactly one model version."""
    if not events:
        return []
    artifact = model.artifact
    scores = artifact.predict_columns(feature_columns(events))
    percentiles = artifact.percentiles(scores)
    priorities = artifact.priorities(scores)
    return [
        CallTask(
            task_id=task_id_for(event.event_id),
            event_id=event.event_id,
            prospect_id=event.prospect_id,
            score=min(max(float(score), 0.0), 1.0),
            priority=priority,
            percentile=float(percentile),
            model_version=model.version,
            scored_at=now,
            not_before=event.not_before,
            attempt=event.campaign,
            retry_of=event.retry_of,
        )
        for event, score, percentile, priority in zip(
            events, scores, percentiles, priorities, strict=True
        )
    ]
