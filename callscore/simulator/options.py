"""The replay's options, checked where they are made: no pandas here, so the command line can
show their defaults without loading it (tests/test_settings_and_cli.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from callqueue.rules import QueuePolicy
from core.errors import CallscoreError

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class ReplayOptions:
    start: str | None = None  # first month 'YYYY-MM' (default: the file's first)
    months: int | None = None  # calendar months replayed (default: to the end)
    outcome_delay: timedelta = timedelta(days=2)
    bad_rate: float = 0.0  # malformed extras per good event (and per good outcome)
    seed: int = 0
    id_prefix: str = "uci"
    repeat_rate: float = 0.2  # rows that are a later contact of an earlier row's prospect
    late_rate: float = 0.05  # rows' events sent again late, dated before the prospect's newest
    do_not_call_rate: float = 0.05  # prospects who object (a do-not-call entry)
    lift_rate: float = 0.25  # of those objections, withdrawn later (a tombstone)
    slow_call_rate: float = 0.05  # outcomes that come after slow_call_delay instead
    slow_call_delay: timedelta = timedelta(days=21)
    # Each row's contacts (simulator.attempts) under the queue's attempt limit and delays
    # (QueuePolicy.of(settings)); None: one call per row, its `y`.
    attempts: QueuePolicy | None = None

    def __post_init__(self) -> None:
        if self.start is not None:
            parse_period(self.start)
        if self.months is not None and self.months < 1:
            raise CallscoreError(f"--months must be at least 1 (got {self.months})")
        if self.outcome_delay < timedelta(0):
            raise CallscoreError("--outcome-delay must not be negative")
        if self.slow_call_delay < timedelta(0):
            raise CallscoreError("--slow-call-delay must not be negative")
        for name in RATES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                flag = "--" + name.replace("_", "-")
                raise CallscoreError(f"{flag} must be between 0 and 1 (got {value})")


# The options that are shares, each checked to be in [0, 1] (and named by its flag).
RATES = (
    "bad_rate",
    "repeat_rate",
    "late_rate",
    "do_not_call_rate",
    "lift_rate",
    "slow_call_rate",
)


def parse_period(text: str) -> tuple[int, int]:
    """A month 'YYYY-MM' as (year, month)."""
    match = _PERIOD.match(text)
    if match is None:
        raise CallscoreError(f"--from must be a month as YYYY-MM, e.g. 2009-01 (got {text!r})")
    return int(match.group(1)), int(match.group(2))
