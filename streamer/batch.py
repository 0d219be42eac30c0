"""One stream batch as a plain object: raw records in; what to publish and what to count out.

No Faust, asyncio or Kafka here, so the batch rules are unit-tested without a broker
(tests/test_stream_batch.py). `streamer/app.py` feeds every `take_events()` batch to
`BatchScorer.score`, sends `BatchResult.outgoing` (streamer/faust_workarounds.py) and hands the
result to `StreamMetrics`.

With the call queue (Settings.queue_enabled, the default), each scored event's line of the
prediction log (`PredictionRecord`: the event's features, the score, the tier and the model
version) goes to the queue's input topic at its prospect's partition, and the queue worker
(streamer/queue_worker.py) decides what is published from it. Without the queue, every call
task is published on its tier topic with its line of the prediction log, in the same batch.
Either way the broker acknowledges every output before the batch's input offsets can be
committed.

Accounting, checked whenever a BatchResult is built:
consumed = scored (tasks) + dead-lettered + duplicates dropped;
outgoing = scored * (1 with the queue, 2 without) + dead-lettered.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from callqueue.inputs import input_record
from core.dead_letters import dead_letter_record
from core.settings import Settings
from core.topic_writer import Outgoing
from schemas import FEATURES, CallTask, DeadLetter, PredictionRecord, ProspectEvent
from streamer.dedupe import RecentIds
from streamer.scoring import Incoming, ServedModel, decode_batch, score_events


class BatchAccountingError(RuntimeError):
    """A batch result that would lose or invent events; never published."""


@dataclass(frozen=True)
class BatchResult:
    """What one batch produced. Every consumed record is in exactly one of tasks, dead_letters
    or duplicates; `outgoing` holds the tasks' records, then their prediction records (same
    order), then the dead letters', in that order."""

    consumed: int
    tasks: list[CallTask]
    dead_letters: list[DeadLetter]
    duplicates: int
    outgoing: list[Outgoing]
    # Kafka timestamp of each task's source record (same order as tasks), for the latency metric.
    task_timestamps: list[float | None]
    scoring_seconds: float
    records_per_task: int = 2  # 1 with the queue: its input; 2 without: task + prediction record

    def __post_init__(self) -> None:
        # Raised, not asserted: it must hold under `python -O` too, and a failed batch is never
        # committed (see streamer/faust_workarounds.py), so raising loses nothing.
        accounted = self.scored + self.dead_lettered + self.duplicates
        if self.consumed != accounted:
            raise BatchAccountingError(
                f"consumed {self.consumed} != scored {self.scored} + dead-lettered "
                f"{self.dead_lettered} + duplicates {self.duplicates}"
            )
        if len(self.outgoing) != self.records_per_task * self.scored + self.dead_lettered:
            raise BatchAccountingError(
                f"{len(self.outgoing)} outgoing records for {self.scored} tasks "
                f"({self.records_per_task} each) and {self.dead_lettered} dead letters"
            )
        if len(self.task_timestamps) != self.scored:
            raise BatchAccountingError(
                f"{len(self.task_timestamps)} timestamps for {self.scored} tasks"
            )

    @property
    def scored(self) -> int:
        return len(self.tasks)

    @property
    def dead_lettered(self) -> int:
        return len(self.dead_letters)


class BatchScorer:
    """Scores batches for one replica; owns nothing but the replica's dedupe window."""

    def __init__(self, settings: Settings, recent_ids: RecentIds) -> None:
        self._settings = settings
        self._recent = recent_ids

    def score(self, records: Sequence[Incoming], model: ServedModel, now: datetime) -> BatchResult:
        """Decode, drop repeats, score with `model` only, and serialize every output.

        Event ids are remembered as soon as they are seen, so a repeat later in the same batch
        is a duplicate too.
        """
        valid, dead = decode_batch(records, self._settings.max_message_bytes, now)
        fresh = [(m, ev) for m, ev in valid if not self._recent.seen(ev.event_id)]
        started = time.perf_counter()
        tasks = score_events([ev for _, ev in fresh], model, now)
        scoring_seconds = time.perf_counter() - started
        scored = list(zip([event for _m, event in fresh], tasks, strict=True))
        queued = self._settings.queue_enabled
        outgoing = self._queue_inputs(scored) if queued else self._outgoing(scored)
        dead_letters = self._settings.topic_dead_letters
        outgoing.extend(dead_letter_record(dead_letters, letter) for letter in dead)
        return BatchResult(
            consumed=len(records),
            tasks=tasks,
            dead_letters=dead,
            duplicates=len(valid) - len(fresh),
            outgoing=outgoing,
            task_timestamps=[message.timestamp for message, _ev in fresh],
            scoring_seconds=scoring_seconds,
            records_per_task=1 if queued else 2,
        )

    def _queue_inputs(self, scored: list[tuple[ProspectEvent, CallTask]]) -> list[Outgoing]:
        """Each event's prediction-log line, as an input of its prospect's queue partition."""
        topic, partitions = self._settings.topic_queue_inputs, self._settings.partitions
        return [
            input_record(
                topic,
                "scored",
                event.prospect_id,
                _RECORD_JSON.to_json(prediction_record(event, task)),
                partitions,
            )
            for event, task in scored
        ]

    def _outgoing(self, scored: list[tuple[ProspectEvent, CallTask]]) -> list[Outgoing]:
        """Each task's record, then each task's prediction record, in the same order.

        One pass; the bytes come straight from the models' serializers (`to_json`, what
        model_dump_json decodes to a str), and the version header is encoded once per version.
        """
        task_topics = self._settings.task_topics
        predictions_topic = self._settings.topic_predictions
        version_headers: dict[int, tuple[str, bytes]] = {}
        task_records: list[Outgoing] = []
        prediction_records: list[Outgoing] = []
        for event, task in scored:
            version = version_headers.get(task.model_version)
            if version is None:
                version = ("model_version", str(task.model_version).encode())
                version_headers[task.model_version] = version
            task_id = ("task_id", task.task_id.encode())
            task_records.append(
                Outgoing(
                    topic=task_topics[task.priority],
                    key=event.prospect_id.encode(),
                    value=_TASK_JSON.to_json(task),
                    headers=[version, task_id],
                )
            )
            prediction_records.append(
                Outgoing(
                    topic=predictions_topic,
                    key=event.event_id.encode(),
                    value=_RECORD_JSON.to_json(prediction_record(event, task)),
                    headers=[version, task_id],
                )
            )
        return task_records + prediction_records


_TASK_JSON = CallTask.__pydantic_serializer__
_RECORD_JSON = PredictionRecord.__pydantic_serializer__


def prediction_record(event: ProspectEvent, task: CallTask) -> PredictionRecord:
    """The prediction log's line for one task: what the model saw (the event) and said (task)."""
    return PredictionRecord(
        event_id=event.event_id,
        task_id=task.task_id,
        prospect_id=event.prospect_id,
        occurred_at=event.occurred_at,
        # event.features(), without model_dump's per-call setup: the same dict
        features={name: getattr(event, name) for name in FEATURES},
        score=task.score,
        priority=task.priority,
        percentile=task.percentile,
        model_version=task.model_version,
        scored_at=task.scored_at,
        not_before=event.not_before,
        retry_of=event.retry_of,
        retry_reason=event.retry_reason,
    )
