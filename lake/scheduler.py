"""`run_schedule`: every day at `settings.export_time` (local), export the previous local day.

A failed run is logged and retried at the start of each following minute, at most
`settings.export_retries` times; then the job waits for the next day. At start it exports the
day the latest scheduled run was due for if the lake does not hold it yet, so a restart (or a
machine that was off at the run time) does not leave a hole: the state is the lake, not memory.
The clock, the sleep and the export are parameters, so the loop is tested without waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from core.errors import CallscoreError
from core.settings import Settings
from lake.days import day_to_export, next_run, parse_hhmm, previous_run
from lake.export import ExportResult
from lake.store import is_exported
from lake.tables import TABLES

log = logging.getLogger("callscore.export")

# Re-read the wall clock at least this often while waiting (clock steps, suspend and resume).
SLEEP_SLICE_SECONDS = 60.0

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]
Export = Callable[[date], ExportResult]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def sleep_until(target: datetime, now: Clock, sleep: Sleep) -> None:
    while (left := (target - now()).total_seconds()) > 0:
        sleep(min(left, SLEEP_SLICE_SECONDS))


def next_minute(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1)


def summary(result: ExportResult) -> str:
    return ", ".join(f"{t.table} {t.rows} rows ({t.invalid} invalid)" for t in result.tables)


def export_with_retries(
    day: date, export: Export, retries: int, now: Clock, sleep: Sleep
) -> ExportResult | None:
    """The export of `day`, tried 1 + retries times a minute apart; None when every try failed."""
    for attempt in range(1, retries + 2):
        started = time.monotonic()
        try:
            result = export(day)
        except CallscoreError as exc:
            log.error("export of %s failed (try %d of %d): %s", day, attempt, retries + 1, exc)
        except Exception:
            # The job runs unattended for months: an unexpected error costs one try, not the job.
            log.exception("export of %s failed (try %d of %d)", day, attempt, retries + 1)
        else:
            log.info(
                "exported %s to %s in %.1f s: %s",
                day,
                result.url,
                time.monotonic() - started,
                summary(result),
            )
            return result
        if attempt <= retries:
            sleep_until(next_minute(now()), now, sleep)
    log.error("giving up on %s after %d tries; waiting for the next run", day, retries + 1)
    return None


def run_schedule(
    settings: Settings,
    url: str,
    export: Export,
    now: Clock = _utc_now,
    sleep: Sleep = time.sleep,
    runs: int | None = None,
) -> None:
    """Export daily, forever (or for `runs` scheduled days, for tests)."""
    tz = ZoneInfo(settings.export_timezone)
    at = parse_hhmm(settings.export_time)
    due = day_to_export(previous_run(now(), at, tz), tz)
    if not is_exported(url, due, [t.name for t in TABLES]):
        log.info("%s is not in %s yet: exporting it now", due, url)
        export_with_retries(due, export, settings.export_retries, now, sleep)
    done = 0
    while runs is None or done < runs:
        run_at = next_run(now(), at, tz)
        day = day_to_export(run_at, tz)
        log.info("next export: %s at %s", day, run_at.astimezone(tz).isoformat())
        sleep_until(run_at, now, sleep)
        export_with_retries(day, export, settings.export_retries, now, sleep)
        done += 1
