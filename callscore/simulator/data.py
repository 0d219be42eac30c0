"""The rows a replay reads: bank-full.csv, found where the trainer finds its data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.settings import Settings
from trainer.data import load_bank, resolve_data_path


def load_rows(data: Path | None, settings: Settings) -> tuple[pd.DataFrame, Path]:
    """The bank-full rows to replay (`data`, else where the trainer finds its data)."""
    path = resolve_data_path(data, settings)
    frame, _sha = load_bank(path)
    return frame, path
