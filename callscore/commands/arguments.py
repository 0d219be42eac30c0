"""Parsing of command-line values shared by the commands (log levels, the replay's delays)."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from core.errors import CallscoreError

_DELAY = re.compile(r"^(\d+(?:\.\d+)?)([dhms])$")
_DELAY_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}

LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]


def parse_delay(text: str, flag: str = "--outcome-delay") -> timedelta:
    """'2d', '12h', '30m', '45s' or '0' (event time); errors name `flag`."""
    text = text.strip().lower()
    if text in ("0", "0.0"):
        return timedelta(0)
    match = _DELAY.match(text)
    if match is None:
        raise CallscoreError(
            f"{flag} must be a number with a unit d, h, m or s (e.g. 2d, 12h, 30m), "
            f"or 0 (got {text!r})"
        )
    return timedelta(seconds=float(match.group(1)) * _DELAY_UNITS[match.group(2)])


def parse_speedup(text: str) -> float:
    """Event-time seconds per wall second; '0' and 'inf' mean as fast as possible (inf)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise CallscoreError(
            f"--speedup must be a number of event-time seconds per wall second (0 or inf: "
            f"as fast as possible), e.g. 259200 for a month in 10 s (got {text!r})"
        )
    return math.inf if value == 0 else value
