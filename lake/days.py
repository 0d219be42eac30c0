"""Local days and run times in the export's time zone, as pure functions (zoneinfo, DST-safe).

A local day is [its midnight, the next midnight) in the zone, so it lasts 23, 24 or 25 hours.
A daily run time that does not exist on a spring-forward day (02:30 in Berlin on the last
Sunday of March) runs where the clock would have been without the jump: 24 hours after the
previous day's run (03:30 CEST). One that exists twice on a fall-back day runs once, at its
first occurrence.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Enough days ahead to step over any DST change or a zone's skipped calendar day.
_LOOKAHEAD_DAYS = 3


def parse_hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of `at` on `day` in `tz` (fold=0: the first of two, the pre-jump offset
    in a gap, as PEP 495 defines)."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def day_window(day: date, tz: ZoneInfo) -> tuple[int, int]:
    """The local day as [start, end) in epoch milliseconds, as Kafka timestamps count."""
    start = local_instant(day, time(0), tz)
    end = local_instant(day + timedelta(days=1), time(0), tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def next_run(now: datetime, at: time, tz: ZoneInfo) -> datetime:
    """The first daily run time strictly after `now` (aware), as a UTC datetime."""
    today = now.astimezone(tz).date()
    for offset in range(-1, _LOOKAHEAD_DAYS):
        candidate = local_instant(today + timedelta(days=offset), at, tz)
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a daily time recurs within three days")


def previous_run(now: datetime, at: time, tz: ZoneInfo) -> datetime:
    """The latest daily run time at or before `now`, as a UTC datetime."""
    today = now.astimezone(tz).date()
    for offset in range(1, -_LOOKAHEAD_DAYS, -1):
        candidate = local_instant(today + timedelta(days=offset), at, tz)
        if candidate <= now:
            return candidate
    raise AssertionError("unreachable: a daily time recurs within three days")


def day_to_export(run_at: datetime, tz: ZoneInfo) -> date:
    """A run exports the local day before the one it runs on."""
    return run_at.astimezone(tz).date() - timedelta(days=1)
