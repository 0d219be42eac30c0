"""`callscore recalibrate: refit the served model's score calibration on recent outcomes`."""

from __future__ import annotations

import argparse
from typing import Any

# Reading the log stops when no record arrived for this long after the topics' ends were seen.
READ_IDLE_TIMEOUT_SECONDS = 15.0


def _window(text: str) -> int:
    from feedback.recalibrate import MIN_CALIBRATION_ROWS

    value = int(text)
    if value < MIN_CALIBRATION_ROWS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_CALIBRATION_ROWS}")
    return value


def read_labelled(settings: Any) -> tuple[list[Any], str]:
    """Join the prediction log and the outcomes topic; returns labelled rows and a summary.

    Each version keeps only its `recalibration_window` matches with the latest call times (a
    heap, so memory stays bounded whatever the topics hold); predictions wait in the same bounded
    join window as the monitor's (Settings.monitor_window_*).
    """
    import heapq
    import itertools
    import time
    from datetime import timedelta

    from pydantic import ValidationError

    from core.errors import BrokerUnavailableError
    from core.topic_reader import TopicReader
    from feedback.join import Labelled, OutcomeJoin
    from schemas import PredictionRecord, decode_outcome
    from schemas.decode import InvalidEvent

    join = OutcomeJoin(
        settings.monitor_window_max_predictions,
        timedelta(days=settings.monitor_window_max_age_days),
    )
    kept: dict[int, list[tuple[Any, int, Labelled]]] = {}
    invalid = {"predictions": 0, "outcomes": 0}
    arrival = itertools.count()  # ties on called_at never compare two Labelled

    def keep(items: list[Labelled]) -> None:
        for item in items:
            heap = kept.setdefault(item.prediction.model_version, [])
            heapq.heappush(heap, (item.outcome.called_at, next(arrival), item))
            if len(heap) > settings.recalibration_window:
                heapq.heappop(heap)

    topics = [settings.topic_predictions, settings.topic_outcomes]
    deadline = time.monotonic() + READ_IDLE_TIMEOUT_SECONDS
    with TopicReader(settings, topics, group_prefix="callscore-recalibrate") as reader:
        while True:
            records = reader.poll(0.2)
            for record in records:
                if record.topic == settings.topic_predictions:
                    try:
                        prediction = PredictionRecord.model_validate_json(record.value or b"")
                    except ValidationError:
                        invalid["predictions"] += 1
                        continue
                    keep(join.add_prediction(prediction))
                else:
                    try:
                        outcome = decode_outcome(record.value, settings.max_message_bytes)
                    except InvalidEvent:
                        invalid["outcomes"] += 1
                        continue
                    matched = join.add_outcome(outcome)
                    keep([matched] if matched is not None else [])
            if reader.at_end:
                break
            if records:
                deadline = time.monotonic() + READ_IDLE_TIMEOUT_SECONDS
            elif time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"could not read {', '.join(topics)} to the end: no record for "
                    f"{READ_IDLE_TIMEOUT_SECONDS:.0f} s"
                )
    counts = join.counts
    summary = (
        f"read {counts.predictions} predictions ({invalid['predictions']} invalid skipped), "
        f"{counts.outcomes} outcomes ({invalid['outcomes']} invalid skipped), "
        f"{counts.matched} matched, {counts.unmatched_waiting} unmatched"
    )
    return [item for heap in kept.values() for _at, _n, item in heap], summary


def _cmd_recalibrate(args: argparse.Namespace) -> int:
    from core.settings import load_settings
    from feedback.recalibrate import run_recalibration

    settings = load_settings()
    if args.window is not None:
        settings = settings.model_copy(update={"recalibration_window": args.window})
    labelled, summary = read_labelled(settings)
    result = run_recalibration(settings, labelled)
    print(f"{result.message}; {summary}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    recalibrate = subparsers.add_parser(
        "recalibrate",
        help="refit the served model's score calibration on its latest outcomes",
        description="Join the prediction log (CALLSCORE_TOPIC_PREDICTIONS) with the call "
        "outcomes (CALLSCORE_TOPIC_OUTCOMES), fit Platt scaling of the served version's raw "
        "score on its latest outcomes, and publish the same pipeline with that calibration as a "
        "new signed version: every scorer hot-loads it. Prints what it published, or why not.",
    )
    recalibrate.add_argument(
        "--window",
        type=_window,
        default=None,
        help="latest labelled outcomes to fit on (default: CALLSCORE_RECALIBRATION_WINDOW)",
    )
    recalibrate.set_defaults(handler=_cmd_recalibrate)
