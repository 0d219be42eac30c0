"""`callscore data fetch`: download UCI's zip, extract bank-full.csv, verify its sha256."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from trainer.data import BANK_FULL_NAME, BANK_FULL_SHA256, DataError, sha256_hex

UCI_URL = "https://archive.ics.uci.edu/static/public/222/bank+marketing.zip"
INNER_ZIP = "bank.zip"


def _member(archive: zipfile.ZipFile, name: str) -> bytes:
    for info in archive.infolist():
        if info.filename.rsplit("/", 1)[-1] == name:
            return archive.read(info)
    raise DataError(f"the download has no {name}")


def extract_bank_full(zip_bytes: bytes, expected_sha256: str = BANK_FULL_SHA256) -> bytes:
    """bank+marketing.zip -> bank.zip -> bank-full.csv, checked against the known digest."""
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as outer:
            inner_bytes = _member(outer, INNER_ZIP)
        with zipfile.ZipFile(io.BytesIO(inner_bytes)) as inner:
            data = _member(inner, BANK_FULL_NAME)
    except zipfile.BadZipFile as exc:
        raise DataError(f"the download is not a valid zip archive: {exc}") from None
    digest = sha256_hex(data)
    if digest != expected_sha256:
        raise DataError(
            f"{BANK_FULL_NAME} has sha256 {digest[:16]}..., expected {expected_sha256[:16]}...: "
            "the download is corrupt or not UCI's file"
        )
    return data


def download(url: str = UCI_URL, timeout: float = 60.0) -> bytes:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read())
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"could not download {url}: {reason}") from None


def verified_cache(cache_dir: Path, expected_sha256: str = BANK_FULL_SHA256) -> Path | None:
    """The cached bank-full.csv if it is there with the expected sha256, else None."""
    target = cache_dir / BANK_FULL_NAME
    try:
        data = target.read_bytes()
    except OSError:
        return None
    return target if sha256_hex(data) == expected_sha256 else None


def fetch_bank_full(cache_dir: Path, source: str = UCI_URL) -> Path:
    """Download (or read a local zip when `source` is a path) into cache_dir; return the CSV."""
    if "://" in source:
        zip_bytes = download(source)
    else:
        try:
            zip_bytes = Path(source).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {source}: {exc.strerror or exc}") from None
    data = extract_bank_full(zip_bytes)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / BANK_FULL_NAME
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target
