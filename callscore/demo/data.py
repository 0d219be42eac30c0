"""The demo's data: the real UCI file when it can be had quickly, else synthetic rows (said loudly).

Order: `--data` / CALLSCORE_DATA / ../shared/data / the `callscore data fetch` cache (as the
trainer resolves it), then one download from UCI bounded by a short timeout (it fills the same
cache, checksum verified), then synthetic rows with bank-full.csv's schema.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.settings import Settings
from trainer.data import DataError, load_bank, resolve_data_path

# Enough synthetic rows for a base model and a replay of a few thousand prospects.
SYNTHETIC_ROWS = 8000


@dataclass(frozen=True)
class DemoData:
    path: Path
    frame: pd.DataFrame
    source: str  # where it came from, for the header and the summary
    synthetic: bool
    warning: str | None = None  # why it is synthetic, shown until the end


def download_bank_full(
    settings: Settings, workdir: Path, timeout: float, url: str | None = None
) -> Path:
    """UCI's zip into the `data fetch` cache within `timeout` seconds in total, else DataError."""
    from trainer.fetch import UCI_URL, download, fetch_bank_full

    source = url or UCI_URL
    result: dict[str, bytes | BaseException] = {}

    def fetch() -> None:
        try:
            result["zip"] = download(source, timeout=timeout)
        except BaseException as exc:  # reported by the caller's thread
            result["error"] = exc

    # A thread bounds the whole download, not just each socket operation.
    thread = threading.Thread(target=fetch, name="uci-download", daemon=True)
    thread.start()
    thread.join(timeout)
    if "zip" not in result:
        error = result.get("error")
        if isinstance(error, DataError):
            raise error
        raise DataError(f"could not download {source} within {timeout:g} s")
    zip_bytes = result["zip"]
    assert isinstance(zip_bytes, bytes)
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / "bank+marketing.zip"
    archive.write_bytes(zip_bytes)
    try:
        # Extraction, sha256 check and the atomic write into the cache are fetch's own.
        return fetch_bank_full(settings.data_cache_dir, str(archive))
    finally:
        archive.unlink(missing_ok=True)


def synthetic_data(workdir: Path, warning: str) -> DemoData:
    from trainer.synthetic import synthetic_bank_frame

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "synthetic-bank.csv"
    synthetic_bank_frame(rows=SYNTHETIC_ROWS).to_csv(path, sep=";", index=False)
    frame, _sha = load_bank(path)
    return DemoData(path, frame, f"synthetic ({SYNTHETIC_ROWS:,} rows)", True, warning)


def resolve_demo_data(
    settings: Settings,
    workdir: Path,
    explicit: Path | None,
    synthetic: bool,
    download_timeout: float,
    say: Callable[[str], None] = lambda _message: None,
) -> DemoData:
    """The real data if found or downloadable within `download_timeout` (0: no download);
    `say` tells the user before the download is tried."""
    if synthetic:
        return synthetic_data(workdir, "synthetic data (--synthetic): model quality means nothing")
    try:
        path = resolve_data_path(explicit, settings)
    except DataError as missing:
        if explicit is not None:
            raise
        return _downloaded(settings, workdir, str(missing.args[0]), download_timeout, say)
    return _real(path, str(path))


def _downloaded(
    settings: Settings, workdir: Path, missing: str, timeout: float, say: Callable[[str], None]
) -> DemoData:
    """UCI's file when it downloads within `timeout` (0: not tried), else synthetic rows."""
    if timeout <= 0:
        return synthetic_data(
            workdir, f"{missing}; using synthetic data: model quality means nothing"
        )
    say(f"{missing}: trying UCI's download (at most {timeout:g} s)...")
    try:
        path = download_bank_full(settings, workdir, timeout)
    except DataError as failed:
        return synthetic_data(
            workdir,
            f"no UCI data found and the download failed ({failed.args[0]}); using synthetic "
            "data: model quality means nothing",
        )
    return _real(path, f"{path} (downloaded from UCI)")


def _real(path: Path, source: str) -> DemoData:
    frame, _sha = load_bank(path)
    return DemoData(path, frame, f"{source} ({len(frame):,} rows)", False)
