"""The data lake: date-partitioned Parquet (or CSV) copies of every topic (`callscore export`).

`lake.read_table(url, table, dates=None)` reads a table back as a pandas DataFrame,
`lake.read_columns(url, table, columns)` some of its columns as Arrow.
They are loaded on first use so that importing `lake.layout` (the CLI does) does not pull in
pandas and pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lake.reader import read_columns, read_table

__all__ = ["read_columns", "read_table"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import lake.reader

        return getattr(lake.reader, name)
    raise AttributeError(f"module 'lake' has no attribute {name!r}")
