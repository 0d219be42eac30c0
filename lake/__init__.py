"""The data lake: date-partitioned Parquet (or CSV) copies of every topic (`callscore export`).

`lake.read_table(url, table, dates=None)` reads a table back as a pandas DataFrame. It is loaded
on first use so that importing `lake.layout` (the CLI does) does not pull in pandas and pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lake.reader import read_table

__all__ = ["read_table"]


def __getattr__(name: str) -> Any:
    if name == "read_table":
        from lake.reader import read_table

        return read_table
    raise AttributeError(f"module 'lake' has no attribute {name!r}")
