"""Where a table's day lives in the lake, and the file formats (no heavy imports: the CLI uses it).

    <url>/<table>/date=YYYY-MM-DD/part-0.parquet      (or part-0.csv)

The `date=` folder is Hive-style partitioning, so pandas, DuckDB (`hive_partitioning`) and Spark
find the day without a catalogue. Staging folders start with `_`, which those readers skip.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

Format = Literal["parquet", "csv"]
FORMATS: tuple[Format, ...] = ("parquet", "csv")
PARTITION_PREFIX = "date="
STAGING_PREFIX = "_tmp."


def part_name(fmt: Format) -> str:
    return f"part-0.{fmt}"


def partition_dir(root: str, table: str, day: date) -> str:
    return f"{root}/{table}/{PARTITION_PREFIX}{day.isoformat()}"


def staging_dir(root: str, table: str, day: date, run_id: str) -> str:
    """A sibling of the partition folder, private to one run."""
    return f"{root}/{table}/{STAGING_PREFIX}{PARTITION_PREFIX}{day.isoformat()}.{run_id}"


def parse_day(text: str) -> date:
    """A YYYY-MM-DD day; ValueError naming the rule otherwise."""
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a day: expected YYYY-MM-DD, e.g. 2026-11-25") from None
