"""`callscore recalibrate: refit the served model's score calibration on recent outcomes`."""

from __future__ import annotations

import argparse


def _window(text: str) -> int:
    from feedback.recalibrate import MIN_CALIBRATION_ROWS

    value = int(text)
    if value < MIN_CALIBRATION_ROWS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_CALIBRATION_ROWS}")
    return value


def _cmd_recalibrate(args: argparse.Namespace) -> int:
    from core.settings import load_settings
    from feedback.recalibrate import run_recalibration
    from trainer.history import read_label_columns

    settings = load_settings()
    if args.window is not None:
        settings = settings.model_copy(update={"recalibration_window": args.window})
    labels = read_label_columns(settings)
    result = run_recalibration(settings, labels)
    print(f"{result.message}; {labels.summary()}")
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
