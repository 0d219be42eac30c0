"""`callscore simulate: replay the UCI rows as prospect events and call outcomes`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Subcommands of this area (added by the issue-8 work in progress)."""
