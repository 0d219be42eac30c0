"""`read_table`: a table's exported days as one pandas DataFrame (what the trainer reads)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import pandas as pd
import pyarrow as pa

from lake.files import conform, decode
from lake.layout import parse_day
from lake.store import LakeError, days, part_files, read_bytes
from lake.tables import TABLES_BY_NAME

DATE_COLUMN = "date"


def read_table(url: str, table: str, dates: Iterable[date | str] | None = None) -> pd.DataFrame:
    """Every row of `table` on all exported days, or on `dates` (each must have been exported).

    Columns are the table's schema plus `date` (the partition, YYYY-MM-DD), in day order and
    within a day in the export's order (topic, partition, offset). Invalid records are included:
    filter on `valid`.
    """
    if table not in TABLES_BY_NAME:
        raise LakeError(f"unknown table {table!r}: expected one of {', '.join(TABLES_BY_NAME)}")
    schema = TABLES_BY_NAME[table].schema
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
    parts = []
    for day in chosen:
        fmt, paths = part_files(url, available[day])
        for path in paths:
            rows = conform(decode(read_bytes(url, path), fmt, schema), schema)
            parts.append(
                rows.append_column(
                    DATE_COLUMN, pa.array([day.isoformat()] * rows.num_rows, pa.string())
                )
            )
    if not parts:
        empty = schema.empty_table()
        return empty.append_column(DATE_COLUMN, pa.array([], pa.string())).to_pandas()
    return pa.concat_tables(parts, promote_options="default").to_pandas()
