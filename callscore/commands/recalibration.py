"""`callscore recalibrate: refit the served model's score calibration on recent outcomes`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Subcommands of this area (added by the issue-8 work in progress)."""
