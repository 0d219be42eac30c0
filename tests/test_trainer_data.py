"""Data loading, validation, period reconstruction, fetch checksum, feedback examples."""

from __future__ import annotations

import gzip
import io
import zipfile
from datetime import UTC, datetime

import pandas as pd
import pytest

from callscore.factories import valid_event
from schemas import CallOutcome, ProspectEvent, task_id_for
from trainer.data import (
    SHARED_COPY,
    DataError,
    add_periods,
    load_bank,
    parse_bank_csv,
    resolve_data_path,
    sha256_hex,
)
from trainer.fetch import extract_bank_full, fetch_bank_full
from trainer.outcomes import labelled_examples, with_outcomes
from trainer.synthetic import synthetic_bank_frame

REAL = SHARED_COPY


def csv_bytes(frame: pd.DataFrame, sep: str = ";") -> bytes:
    return frame.to_csv(sep=sep, index=False).encode()


def test_synthetic_csv_roundtrip_plain_and_gzip(tmp_path):
    data = csv_bytes(synthetic_bank_frame(300))
    plain, packed = tmp_path / "b.csv", tmp_path / "b.csv.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data))
    a, sha_a = load_bank(plain)
    b, sha_b = load_bank(packed)
    assert len(a) == len(b) == 300
    assert sha_a == sha_b == sha256_hex(data)
    assert {"period", "year"} <= set(a.columns)


def test_periods_start_a_new_year_where_the_month_drops():
    frame = pd.DataFrame({"month": ["may", "may", "dec", "jan", "jan", "nov", "mar", "mar"]})
    periods = add_periods(frame)["period"].tolist()
    assert periods == [
        "2008-05",
        "2008-05",
        "2008-12",
        "2009-01",
        "2009-01",
        "2009-11",
        "2010-03",
        "2010-03",
    ]


@pytest.mark.skipif(not REAL.is_file(), reason="UCI bank-full not available")
def test_real_file_spans_may_2008_to_nov_2010():
    frame, sha = load_bank(REAL)
    assert sha == "d1513ec63b385506f7cfce9f2c5caa9fe99e7ba4e8c3fa264b3aaf0f849ed32d"
    assert frame["period"].iloc[0] == "2008-05" and frame["period"].iloc[-1] == "2010-11"
    assert frame["period"].is_monotonic_increasing


def test_missing_file(tmp_path, settings):
    with pytest.raises(DataError, match="not found"):
        resolve_data_path(tmp_path / "nope.csv", settings)


def test_setting_is_used_when_no_flag(tmp_path, settings):
    path = tmp_path / "b.csv"
    path.write_bytes(b"x")
    assert resolve_data_path(None, settings.model_copy(update={"data": path})) == path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: csv_bytes(f, sep=","), "not ';'-separated"),
        (lambda f: csv_bytes(f.drop(columns=["pdays"])), "lacks column"),
        (lambda f: b"", "empty"),
        (lambda f: csv_bytes(f.iloc[:0]), "no rows"),
        (lambda f: csv_bytes(f.assign(y="no")), "only one class"),
        (lambda f: csv_bytes(f.assign(job="astronaut")), "unknown value"),
        (lambda f: csv_bytes(f.assign(age="old")), "non-numeric"),
    ],
)
def test_bad_input_is_one_clear_error(mutate, message):
    with pytest.raises(DataError, match=message) as excinfo:
        parse_bank_csv(mutate(synthetic_bank_frame(200)))
    assert "\n" not in str(excinfo.value)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "b.csv.gz"
    path.write_bytes(gzip.compress(csv_bytes(synthetic_bank_frame(200)))[:-30])
    with pytest.raises(DataError, match="gzip"):
        load_bank(path)


def _uci_zip(member: bytes) -> bytes:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("bank-full.csv", member)
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as z:
        z.writestr("bank.zip", inner.getvalue())
    return outer.getvalue()


def test_fetch_refuses_a_wrong_checksum(tmp_path):
    archive = tmp_path / "bank+marketing.zip"
    archive.write_bytes(_uci_zip(csv_bytes(synthetic_bank_frame(50))))
    with pytest.raises(DataError, match="sha256"):
        fetch_bank_full(tmp_path / "cache", str(archive))
    assert not (tmp_path / "cache" / "bank-full.csv").exists()


def test_fetch_extracts_and_verifies(tmp_path):
    data = csv_bytes(synthetic_bank_frame(50))
    assert extract_bank_full(_uci_zip(data), expected_sha256=sha256_hex(data)) == data
    with pytest.raises(DataError, match="not a valid zip"):
        extract_bank_full(b"not a zip")


@pytest.mark.skipif(not REAL.is_file(), reason="UCI bank-full not available")
def test_fetch_accepts_the_real_file(tmp_path):
    archive = tmp_path / "bank+marketing.zip"
    archive.write_bytes(_uci_zip(gzip.decompress(REAL.read_bytes())))
    path = fetch_bank_full(tmp_path / "cache", str(archive))
    assert load_bank(path)[0].shape[0] == 45_211


def test_labelled_examples_join_outcomes_with_scored_events():
    events = [
        ProspectEvent.model_validate(
            valid_event(event_id=f"e{i}", occurred_at="2026-03-04T10:00:00+00:00")
        )
        for i in range(3)
    ]
    called = datetime(2026, 3, 5, tzinfo=UTC)
    outcomes = [
        CallOutcome(
            event_id="e0", prospect_id="c", called_at=called, subscribed=True, duration_seconds=9
        ),
        CallOutcome(
            task_id=task_id_for("e1"),
            prospect_id="c",
            called_at=called,
            subscribed=False,
            duration_seconds=3,
        ),
        CallOutcome(
            event_id="unknown",
            prospect_id="c",
            called_at=called,
            subscribed=True,
            duration_seconds=1,
        ),
    ]
    examples = labelled_examples(events, outcomes)
    assert sorted(examples["y"]) == ["no", "yes"]
    assert set(examples["period"]) == {"2026-03"}
    bank = add_periods(synthetic_bank_frame(100))
    combined = with_outcomes(bank, examples)
    assert len(combined) == 102 and combined["period"].iloc[-1] == "2026-03"
