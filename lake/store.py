"""The lake on any fsspec filesystem: swap a day's files in, find the days and their files.

A day is replaced in two phases. First every table's file is written to a staging folder next to
its partition (`_tmp.date=…`, skipped by readers); only when all of them are written is each one
moved over its partition's `part-0.*`, after which any other file in the partition (a part of
the other format from an earlier run) is deleted. On a local disk the move is a rename, so a
reader sees the old file or the new one, never half of one. On an object store (s3://, abfs://)
a move is a copy then a delete: the new object replaces the old one whole (a PUT is atomic per
object), and the stale files go after it.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import CallscoreError
from lake.files import COMPLETE_KEY, decode
from lake.layout import (
    FORMATS,
    PARTITION_PREFIX,
    Format,
    part_name,
    partition_dir,
    staging_dir,
)


class LakeError(CallscoreError):
    """The lake cannot be opened, written or read as asked."""


def open_lake(url: str) -> tuple[Any, str]:
    """The fsspec filesystem and root path of a lake URL (a plain path is a local folder)."""
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise LakeError(f"cannot open the lake at {url}: {exc}") from None
    except ValueError as exc:
        raise LakeError(f"cannot open the lake at {url}: {exc}") from None
    return fs, str(root).rstrip("/")


def _name(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def write_day(url: str, day: date, files: Mapping[str, bytes], fmt: Format) -> dict[str, str]:
    """Replace the day of every table in `files` (table -> file bytes); returns their URLs."""
    fs, root = open_lake(url)
    run_id = uuid.uuid4().hex[:12]
    name = part_name(fmt)
    staged: dict[str, str] = {}
    try:
        for table, data in files.items():
            stage = staging_dir(root, table, day, run_id)
            staged[table] = stage
            fs.makedirs(stage, exist_ok=True)
            fs.pipe_file(f"{stage}/{name}", data)
        written = {}
        for table, stage in staged.items():
            final = partition_dir(root, table, day)
            fs.makedirs(final, exist_ok=True)
            fs.mv(f"{stage}/{name}", f"{final}/{name}")
            fs.invalidate_cache(final)
            for path in fs.ls(final, detail=False):
                if _name(path) != name:
                    fs.rm(path, recursive=True)
            written[table] = fs.unstrip_protocol(f"{final}/{name}")
        return written
    except OSError as exc:
        raise LakeError(f"writing {day.isoformat()} to {url} failed: {exc}") from None
    finally:
        for stage in staged.values():
            if fs.exists(stage):
                fs.rm(stage, recursive=True)


def days(url: str, table: str) -> dict[date, str]:
    """The table's exported days -> partition folder (an absent table has none)."""
    fs, root = open_lake(url)
    found = {}
    for path in fs.glob(f"{root}/{table}/{PARTITION_PREFIX}*"):
        try:
            day = date.fromisoformat(_name(path).removeprefix(PARTITION_PREFIX))
        except ValueError:
            continue
        found[day] = path
    return dict(sorted(found.items()))


def part_files(url: str, folder: str) -> tuple[Format, list[str]]:
    """The partition's parts of one format: Parquet if any, else CSV. A run that switches the
    format briefly leaves both parts; reading one format never mixes the two runs."""
    fs, _root = open_lake(url)
    names = sorted(fs.ls(folder, detail=False))
    for fmt in FORMATS:
        parts = [p for p in names if _name(p).startswith("part-") and _name(p).endswith(f".{fmt}")]
        if parts:
            return fmt, parts
    raise LakeError(f"{folder} holds no part-*.parquet or part-*.csv file")


def folder_version(url: str, folder: str) -> tuple[tuple[str, str], ...]:
    """What identifies a partition folder's current files (name and modification time, else
    size): a day re-exported since reads as changed."""
    fs, _root = open_lake(url)
    fs.invalidate_cache(folder)
    entries = fs.ls(folder, detail=True)
    stamp = ("mtime", "LastModified", "last_modified", "ETag", "size")
    return tuple(
        sorted(
            (_name(e["name"]), str(next((e[k] for k in stamp if e.get(k) is not None), "")))
            for e in entries
        )
    )


def read_part(
    url: str, path: str, fmt: Format, schema: pa.Schema, columns: Sequence[str] | None = None
) -> pa.Table:
    """One part file's rows; Parquet reads only `columns` (those it has) from storage."""
    fs, _root = open_lake(url)
    if fmt == "csv":
        return decode(bytes(fs.cat_file(path)), fmt, schema)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        present = parquet.schema_arrow.names
        keep = None if columns is None else [name for name in columns if name in present]
        return parquet.read(columns=keep)


def part_is_complete(url: str, path: str) -> bool:
    """A Parquet part written after its day was over (its footer's `COMPLETE_KEY`)."""
    fs, _root = open_lake(url)
    with fs.open(path, "rb") as handle:
        metadata = pq.read_schema(handle).metadata or {}
    return metadata.get(COMPLETE_KEY) == b"true"


def is_exported(url: str, day: date, tables: Iterable[str]) -> bool:
    """True when every table has a part file for the day."""
    fs, root = open_lake(url)
    for table in tables:
        folder = partition_dir(root, table, day)
        if not any(fs.exists(f"{folder}/{part_name(fmt)}") for fmt in FORMATS):
            return False
    return True
