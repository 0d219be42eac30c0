"""An Arrow table <-> the bytes of one lake file (Parquet or CSV), deterministic for equal input."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lake.layout import Format

# A Parquet day's file says whether its day was over (its end plus the export's lateness) when
# it was read: only complete days let the labelled history skip the topics' records of the day.
COMPLETE_KEY = b"callscore.complete"


def encode(table: pa.Table, fmt: Format, complete: bool = True) -> bytes:
    sink = pa.BufferOutputStream()
    if fmt == "parquet":
        metadata = {
            **(table.schema.metadata or {}),
            COMPLETE_KEY: b"true" if complete else b"false",
        }
        pq.write_table(table.replace_schema_metadata(metadata), sink)
    else:
        pa_csv.write_csv(table, sink)
    return bytes(sink.getvalue())


def decode(data: bytes, fmt: Format, schema: pa.Schema) -> pa.Table:
    """The file's rows with the table's current types (CSV carries no types of its own)."""
    if fmt == "parquet":
        return pq.read_table(pa.BufferReader(data))
    return pa_csv.read_csv(
        pa.BufferReader(data),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={f.name: f.type for f in schema},
            # An empty unquoted cell is a null; "" is an empty string (as write_csv writes them).
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The schema's columns in its order (null where an older file lacks one), then any extra."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    extra = [name for name in table.column_names if name not in schema.names]
    return pa.Table.from_arrays(
        [*columns, *(table.column(name) for name in extra)],
        schema=pa.schema([*schema, *(table.schema.field(name) for name in extra)]),
    )
