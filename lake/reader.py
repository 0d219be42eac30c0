"""`read_table`: a table's exported days as one pandas DataFrame; `read_columns`: some of its
columns as Arrow (what the labelled history reads)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import pandas as pd
import pyarrow as pa

from lake.files import conform
from lake.layout import parse_day
from lake.store import LakeError, days, part_files, part_is_complete, read_part
from lake.tables import TABLES_BY_NAME

DATE_COLUMN = "date"


def read_table(url: str, table: str, dates: Iterable[date | str] | None = None) -> pd.DataFrame:
    """Every row of `table` on all exported days, or on `dates` (each must have been exported).

    Columns are the table's schema plus `date` (the partition, YYYY-MM-DD), in day order and
    within a day in the export's order (topic, partition, offset). Invalid records are included:
    filter on `valid`.
    """
    return read_columns(url, table, dates=dates).to_pandas()


def read_columns(
    url: str,
    table: str,
    columns: Sequence[str] | None = None,
    dates: Iterable[date | str] | None = None,
) -> pa.Table:
    """`read_table` as Arrow, only `columns` (and `date`): a Parquet day reads nothing else from
    storage (column pruning), so a check over millions of rows reads a few narrow columns."""
    if table not in TABLES_BY_NAME:
        raise LakeError(f"unknown table {table!r}: expected one of {', '.join(TABLES_BY_NAME)}")
    schema = TABLES_BY_NAME[table].schema
    wanted = schema.names if columns is None else list(columns)
    unknown = [name for name in wanted if name not in schema.names]
    if unknown:
        raise LakeError(f"{table} has no column {', '.join(unknown)}")
    available = days(url, table)
    if dates is None:
        chosen = list(available)
    else:
        try:
            chosen = sorted({d if isinstance(d, date) else parse_day(d) for d in dates})
        except ValueError as exc:
            raise LakeError(f"dates: {exc}") from None
        missing = [d.isoformat() for d in chosen if d not in available]
        if missing:
            raise LakeError(f"{url}/{table} has no export for {', '.join(missing)}")
    selected = pa.schema([schema.field(name) for name in wanted])
    parts = []
    for day in chosen:
        fmt, paths = part_files(url, available[day])
        for path in paths:
            rows = conform(read_part(url, path, fmt, schema, wanted), schema).select(wanted)
            parts.append(
                rows.append_column(
                    DATE_COLUMN, pa.array([day.isoformat()] * rows.num_rows, pa.string())
                )
            )
    if not parts:
        return selected.empty_table().append_column(DATE_COLUMN, pa.array([], pa.string()))
    return pa.concat_tables(parts, promote_options="default")


def complete_days(url: str, tables: Sequence[str]) -> list[date]:
    """Days every table was exported in Parquet after the day was over (`COMPLETE_KEY`), in
    order: every record stamped within such a day is in the lake. A CSV day, a day exported
    while it was still going on, and a day written before the marker existed are not."""
    found = None
    for table in tables:
        complete = {day for day, folder in days(url, table).items() if is_complete(url, folder)}
        found = complete if found is None else found & complete
    return sorted(found or ())


def is_complete(url: str, folder: str) -> bool:
    """A day's partition folder holds Parquet parts written after the day was over."""
    fmt, paths = part_files(url, folder)
    return fmt == "parquet" and all(part_is_complete(url, p) for p in paths)
