"""Loading UCI bank-full.csv: where it is, what it must look like, and when each row happened.

The file has no year column. Rows are chronological (May 2008 to November 2010), so a new year
starts wherever the month number drops; `add_periods` reconstructs (year, month) from that.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import CallscoreError
from core.settings import Settings
from schemas import CATEGORIES, FEATURES, MONTHS, POST_CALL_FIELDS

BANK_FULL_SHA256 = "d1513ec63b385506f7cfce9f2c5caa9fe99e7ba4e8c3fa264b3aaf0f849ed32d"
BANK_FULL_NAME = "bank-full.csv"
# `../shared/data` next to the project root (CI and the development machines have it).
SHARED_COPY = Path(__file__).resolve().parents[2] / "shared" / "data" / "bank-full.csv.gz"
FIRST_YEAR = 2008
COLUMNS: tuple[str, ...] = (*FEATURES, *POST_CALL_FIELDS)


class DataError(CallscoreError):
    """The training data is missing, unreadable or not bank-full.csv's schema."""


def resolve_data_path(explicit: Path | None, settings: Settings) -> Path:
    """--data, then CALLSCORE_DATA, then ../shared/data, then the `data fetch` cache."""
    for candidate in (explicit, settings.data):
        if candidate is not None:
            if not Path(candidate).is_file():
                raise DataError(f"data file not found: {candidate}")
            return Path(candidate)
    if SHARED_COPY.is_file():
        return SHARED_COPY
    cached = settings.data_cache_dir / BANK_FULL_NAME
    if cached.is_file():
        return cached
    raise DataError(
        "no training data: pass --data PATH, set CALLSCORE_DATA, or run `callscore data fetch`"
    )


def read_bytes(path: Path) -> bytes:
    """The uncompressed CSV bytes of a plain or gzip file."""
    import gzip

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path} is not a valid gzip file: {exc}") from None
    return raw


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_bank_csv(data: bytes, source: str = "data") -> pd.DataFrame:
    """Parse and validate bank-full.csv bytes; raises DataError naming the first problem."""
    if not data.strip():
        raise DataError(f"{source} is empty")
    header = data.split(b"\n", 1)[0]
    if b";" not in header:
        raise DataError(f"{source} is not ';'-separated (bank-full.csv uses ';')")
    try:
        frame = pd.read_csv(io.BytesIO(data), sep=";", quotechar='"')
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{source} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{source} lacks column(s) {', '.join(missing)}")
    if frame.empty:
        raise DataError(f"{source} has a header but no rows")
    return validate_frame(frame[list(COLUMNS)], source)


def validate_frame(frame: pd.DataFrame, source: str = "data") -> pd.DataFrame:
    """Check value sets and numeric columns; returns a copy with clean dtypes."""
    frame = frame.copy()
    for name, values in CATEGORIES.items():
        bad = ~frame[name].isin(values)
        if bad.any():
            raise DataError(
                f"{source}: column '{name}' has unknown value {frame.loc[bad, name].iloc[0]!r}"
            )
        frame[name] = frame[name].astype(object)
    for name in (*FEATURES, "duration"):
        if name in CATEGORIES:
            continue
        numbers = pd.to_numeric(frame[name], errors="coerce")
        if numbers.isna().any():
            raise DataError(f"{source}: column '{name}' has non-numeric or missing values")
        frame[name] = numbers.astype(np.int64)
    if not frame["y"].isin(["yes", "no"]).all():
        raise DataError(f"{source}: column 'y' must be 'yes' or 'no'")
    if frame["y"].nunique() < 2:
        raise DataError(f"{source}: only one class in 'y' ({frame['y'].iloc[0]!r}); need both")
    return frame


def add_periods(frame: pd.DataFrame, first_year: int = FIRST_YEAR) -> pd.DataFrame:
    """Add `year` and `period` ('YYYY-MM'): a new year starts where the month number drops."""
    month_number = frame["month"].map({m: i + 1 for i, m in enumerate(MONTHS)}).to_numpy()
    drops = np.concatenate([[0], (np.diff(month_number) < 0).astype(int)])
    year = first_year + np.cumsum(drops)
    out = frame.copy()
    out["year"] = year
    out["period"] = [f"{y:04d}-{m:02d}" for y, m in zip(year, month_number, strict=True)]
    return out


def load_bank(path: Path) -> tuple[pd.DataFrame, str]:
    """The validated frame with periods, and the sha256 of the uncompressed bytes."""
    data = read_bytes(path)
    frame = parse_bank_csv(data, source=str(path))
    return add_periods(frame), sha256_hex(data)


def labels(frame: pd.DataFrame) -> np.ndarray:
    return (frame["y"] == "yes").to_numpy(dtype=int)


def cut_base(frame: pd.DataFrame, until: str | None) -> pd.DataFrame:
    """The base-data rows of contact periods before `until` ('YYYY-MM'; None keeps every row).

    A replay of the same file from `until` on supplies the later rows as outcomes: cutting them
    here keeps any row from being counted twice.
    """
    if until is None:
        return frame
    return frame.loc[frame["period"] < until].reset_index(drop=True)
