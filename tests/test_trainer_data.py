"""Data loading, validation, period reconstruction, fetch checksum, feedback examples."""

from __future__ import annotations

import gzip
import io
import zipfile
from datetime import UTC, datetime

import pandas as pd
import pytest

from feedback.labels import label_set
from schemas import CallOutcome, PredictionRecord, ProspectEvent, task_id_for
from testkit.factories import valid_event
from trainer.data import (
    SHARED_COPY,
    DataError,
    add_periods,
    cut_base,
    load_bank,
    parse_bank_csv,
    resolve_data_path,
    sha256_hex,
)
from trainer.fetch import extract_bank_full, fetch_bank_full, verified_cache
from trainer.outcomes import outcome_rows, with_outcomes
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


def test_verified_cache_needs_the_file_with_its_checksum(tmp_path):
    cache = tmp_path / "cache"
    data = csv_bytes(synthetic_bank_frame(50))
    assert verified_cache(cache, sha256_hex(data)) is None
    cache.mkdir()
    (cache / "bank-full.csv").write_bytes(data)
    assert verified_cache(cache, sha256_hex(data)) == cache / "bank-full.csv"
    (cache / "bank-full.csv").write_bytes(data[:-10])
    assert verified_cache(cache, sha256_hex(data)) is None


def _prediction(event: dict, version: int = 1) -> PredictionRecord:
    parsed = ProspectEvent.model_validate(event)
    return PredictionRecord(
        event_id=parsed.event_id,
        task_id=task_id_for(parsed.event_id),
        prospect_id=parsed.prospect_id,
        occurred_at=parsed.occurred_at,
        features=parsed.features(),
        score=0.3,
        priority="medium",
        percentile=50.0,
        model_version=version,
        scored_at=parsed.occurred_at,
    )


def _values(items: list) -> list[bytes]:
    return [item.model_dump_json().encode() for item in items]


def test_labelled_examples_join_outcomes_with_scored_events():
    predictions = [
        _prediction(valid_event(event_id=f"e{i}", occurred_at="2026-03-04T10:00:00+00:00"))
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
    labels = label_set(_values(predictions), _values(outcomes))
    assert labels.counts.matched == 2 and labels.counts.unmatched == 1
    examples = outcome_rows(labels.columns.labelled)
    assert sorted(examples["y"]) == ["no", "yes"]
    assert set(examples["period"]) == {"2026-03"}
    assert examples.set_index("y")["duration"].to_dict() == {"yes": 9, "no": 3}
    bank = add_periods(synthetic_bank_frame(100))
    combined = with_outcomes(bank, examples)
    assert len(combined) == 102 and combined["period"].iloc[-1] == "2026-03"
    assert combined.dtypes.equals(bank.dtypes)


def test_latest_call_wins_and_invalid_records_are_counted_not_used():
    event = valid_event(event_id="e0", occurred_at="2010-02-03T10:00:00+00:00")
    good = _prediction(event)
    bad = _prediction(valid_event(event_id="e1")).model_copy(
        update={"features": {**good.features, "job": "astronaut"}}
    )
    first, second = (
        CallOutcome(
            event_id="e0",
            prospect_id="c",
            called_at=datetime(2010, 2, day, tzinfo=UTC),
            subscribed=subscribed,
            duration_seconds=5,
        )
        for day, subscribed in ((9, False), (5, True))
    )
    labels = label_set(
        [*_values([good, bad]), b"{}"], [*_values([first, second]), b"[1]", b"", None]
    )
    assert labels.counts.invalid_predictions == 2 and labels.counts.invalid_outcomes == 3
    assert labels.counts.predictions == 1 and labels.counts.matched == 2
    assert [item.subscribed for item in labels.labelled] == [False]  # called on the 9th
    assert labels.labelled_until == datetime(2010, 2, 9, tzinfo=UTC)
    assert any("features.job" in message for message in labels.errors)
    assert len(labels.errors) == 5  # every message while under KEPT_ERRORS (3) per kind
    flood = label_set([], [b""] * 50)
    assert flood.counts.invalid_outcomes == 50 and len(flood.errors) == 3  # KEPT_ERRORS


def test_base_cut_and_outcomes_keep_time_order():
    bank = add_periods(synthetic_bank_frame(600, seed=3))
    cut = cut_base(bank, "2009-06")
    assert cut["period"].max() < "2009-06" and len(cut) == (bank["period"] < "2009-06").sum()
    assert cut_base(bank, None) is bank
    later = bank.loc[bank["period"] >= "2009-06"]
    rows = later.iloc[::-1]  # any order in, chronological out
    combined = with_outcomes(cut, rows)
    assert combined["period"].is_monotonic_increasing and len(combined) == len(bank)
    overlap = with_outcomes(bank.loc[bank["period"] < "2009-09"], later.iloc[:5])
    assert overlap["period"].is_monotonic_increasing


def test_only_calls_that_reached_the_prospect_are_labels():
    event = valid_event(event_id="e0", occurred_at="2010-02-03T10:00:00+00:00")
    called = datetime(2010, 2, 4, tzinfo=UTC)
    unanswered = [
        CallOutcome(event_id="e0", prospect_id="c", called_at=called, disposition=d)
        for d in ("no_answer", "busy", "voicemail", "wrong_number", "do_not_call")
    ]
    labels = label_set(_values([_prediction(event)]), _values(unanswered))
    assert labels.labelled == [] and labels.counts.not_reached == 5
    assert labels.counts.matched == 0 and labels.counts.unmatched == 0
    assert "5 not reached" in labels.summary()
