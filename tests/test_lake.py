"""The nightly export (`callscore export`, lake/): a day of every table from a real broker to
date-partitioned Parquet/CSV, read back with pandas and pyarrow; re-runs, failures, empty days,
memory://, and the schedule's pure time functions and retry loop."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import fsspec
import pandas as pd
import pyarrow.parquet as pq
import pytest

from callscore.cli import main
from callscore.processes import CALLSCORE
from core.errors import CallscoreError
from core.kafka import ensure_topics, producer_config
from core.local_broker import LocalBroker, free_port
from core.settings import Settings
from core.topic_reader import Record
from lake import read_table
from lake.days import day_to_export, day_window, next_run, previous_run
from lake.export import ExportResult, TableExport, export_day
from lake.files import COMPLETE_KEY, encode
from lake.rows import to_arrow
from lake.scheduler import run_schedule
from lake.store import LakeError, write_day
from lake.tables import TABLES, TABLES_BY_NAME
from schemas import FEATURES, CallTask, DeadLetter, FieldError, PredictionRecord, task_id_for
from testkit.factories import valid_event
from testkit.harness import isolated_settings

BERLIN = ZoneInfo("Europe/Berlin")
# Berlin springs forward on this day: the local day lasts 23 hours.
DAY = date(2026, 3, 29)
NEXT_DAY = DAY + timedelta(days=1)
START_MS, END_MS = day_window(DAY, BERLIN)
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Sent:
    table: str
    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    valid: bool
    kind: str | None = None  # the expected invalid_kind
    partition: int = -1
    offset: int = -1

    @property
    def where(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


def _prediction(event_id: str, **features: Any) -> dict[str, Any]:
    """A valid prediction record as JSON data; `features` overrides some feature values."""
    event = valid_event(event_id=event_id, prospect_id=f"cust-{event_id}")
    data = PredictionRecord(
        event_id=event_id,
        task_id=task_id_for(event_id),
        prospect_id=event["prospect_id"],
        occurred_at=event["occurred_at"],
        features={name: event[name] for name in FEATURES},
        score=0.42,
        priority="high",
        percentile=97.5,
        model_version=3,
        scored_at=datetime(2026, 3, 29, 9, 0, tzinfo=UTC),
    ).model_dump(mode="json")
    data["features"] |= features
    return data


def _task(event_id: str, priority: str) -> bytes:
    task = CallTask(
        task_id=task_id_for(event_id),
        event_id=event_id,
        prospect_id="cust-1",
        score=0.3,
        priority=priority,
        percentile=50.0,
        model_version=3,
        scored_at=datetime(2026, 3, 29, 9, 0, tzinfo=UTC),
    )
    return task.model_dump_json().encode()


def _letter(topic: str, payload: bytes) -> bytes:
    return (
        DeadLetter(
            payload=payload,
            payload_size=len(payload),
            key=b"k1",
            source_topic=topic,
            source_partition=1,
            source_offset=7,
            error_kind="not_utf8",
            message="payload is not UTF-8",
            field_errors=[FieldError(field="age", rule="int_type", message="bad")],
            received_at=datetime(2026, 3, 29, 9, 0, tzinfo=UTC),
        )
        .model_dump_json()
        .encode()
    )


def _outcome(**fields: Any) -> bytes:
    return _json(
        {"prospect_id": "cust-1", "called_at": "2026-03-29T12:00:00+02:00", "subscribed": True}
        | {"duration_seconds": 95}
        | fields
    )


def plan(s: Settings) -> list[Sent]:
    """The records of DAY (valid and invalid), its boundaries, and of the days around it."""
    first, mid, last = START_MS, START_MS + 3 * HOUR_MS, END_MS - 1
    before, after, next_day = START_MS - 1, END_MS, END_MS + 6 * HOUR_MS
    p = s.topic_prospects
    return [
        Sent("prospects", p, b"c1", _json(valid_event(event_id="p-1")), first, True),
        Sent(
            "prospects",
            p,
            b"c2",
            _json(valid_event(event_id="p-2", occurred_at="2026-03-29T10:00:00+02:00")),
            mid,
            True,
        ),
        Sent("prospects", p, b"c3", _json(valid_event(event_id="p-3", age=99)), last, True),
        Sent("prospects", p, b"c4", b"not json", mid, False, "not_json"),
        Sent("prospects", p, b"c5", _json(valid_event(duration=5)), mid, False, "post_call_field"),
        Sent("prospects", p, b"c6", _json(valid_event(age="41")), mid, False, "invalid_fields"),
        Sent("prospects", p, b"c7", None, mid, False, "empty"),
        Sent("prospects", p, None, b"\xff\xfe{}", mid, False, "not_utf8"),
        Sent("prospects", p, b"c9", _json(valid_event(event_id="p-9")), before, True),
        Sent("prospects", p, b"c10", _json(valid_event(event_id="p-10")), after, True),
        Sent("prospects", p, b"c11", b"[1]", next_day, False, "not_object"),
        Sent("predictions", s.topic_predictions, b"e1", _json(_prediction("e-1")), first, True),
        Sent("predictions", s.topic_predictions, b"e2", _json(_prediction("e-2")), last, True),
        Sent(
            "predictions",
            s.topic_predictions,
            b"e3",
            _json({k: v for k, v in _prediction("e-3").items() if k != "score"}),
            mid,
            False,
            "invalid_fields",
        ),
        Sent(
            "predictions",
            s.topic_predictions,
            b"e4",
            _json(_prediction("e-4", age="x")),
            mid,
            False,
            "invalid_fields",
        ),
        Sent("predictions", s.topic_predictions, b"e5", _json(_prediction("e-5")), next_day, True),
        *(
            Sent("call_tasks", s.task_topic(tier), b"t", _task(f"e-{tier}", tier), mid, True)
            for tier in ("high", "medium", "low")
        ),
        Sent("call_tasks", s.task_topic("high"), b"t", b"{}", mid, False, "invalid_fields"),
        Sent("call_tasks", s.task_topic("low"), b"t", _task("e-9", "low"), next_day, True),
        Sent("outcomes", s.topic_outcomes, b"o1", _outcome(event_id="e-1"), first, True),
        Sent("outcomes", s.topic_outcomes, b"o2", _outcome(task_id="t-2"), mid, True),
        Sent("outcomes", s.topic_outcomes, b"o3", _outcome(), mid, False, "invalid_fields"),
        Sent("outcomes", s.topic_outcomes, b"o4", b"", mid, False, "empty"),
        Sent("outcomes", s.topic_outcomes, b"o5", _outcome(event_id="e-5"), before, True),
        Sent("dead_letters", s.topic_dead_letters, b"d1", _letter(p, b"\xff\x00"), mid, True),
        Sent(
            "dead_letters",
            s.topic_outcome_dead_letters,
            b"d2",
            _letter(s.topic_outcomes, b"{"),
            last,
            True,
        ),
        Sent("dead_letters", s.topic_dead_letters, b"d3", b"nope", after, False, "not_json"),
    ]


def produce_plan(settings: Settings, records: list[Sent]) -> list[Sent]:
    """Produce with explicit timestamps; the records with where they landed."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(settings, **{"enable.idempotence": False}))
    landed: dict[int, tuple[int, int]] = {}
    for i, sent in enumerate(records):

        def delivered(err: Any, msg: Any, i: int = i) -> None:
            assert err is None, err
            landed[i] = (msg.partition(), msg.offset())

        producer.produce(
            sent.topic,
            key=sent.key,
            value=sent.value,
            timestamp=sent.timestamp_ms,
            on_delivery=delivered,
        )
    assert producer.flush(15) == 0
    return [
        Sent(**{**sent.__dict__, "partition": landed[i][0], "offset": landed[i][1]})
        for i, sent in enumerate(records)
    ]


@dataclass(frozen=True)
class Lake:
    settings: Settings
    sent: list[Sent]
    url: str
    result: ExportResult

    def expected(self, table: str, day: date = DAY) -> list[Sent]:
        start, end = day_window(day, BERLIN)
        return sorted(
            (s for s in self.sent if s.table == table and start <= s.timestamp_ms < end),
            key=lambda s: s.where,
        )

    def path(self, table: str, day: date = DAY, fmt: str = "parquet") -> str:
        return f"{self.url}/{table}/date={day.isoformat()}/part-0.{fmt}"


@pytest.fixture(scope="module")
def lake(kafka_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    workdir = tmp_path_factory.mktemp("lake")
    settings = isolated_settings(
        uuid.uuid4().hex[:10],
        workdir,
        partitions=2,
        **kafka_broker.client_settings(),
        export_timezone="Europe/Berlin",
        export_read_timeout_seconds=30,
    )
    ensure_topics(settings)
    sent = produce_plan(settings, plan(settings))
    url = str(workdir / "lake")
    return Lake(settings, sent, url, export_day(settings, DAY, url=url))


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_export_keeps_every_record_of_the_local_day(lake: Lake) -> None:
    assert {t.table: (t.rows, t.invalid) for t in lake.result.tables} == {
        "prospects": (8, 5),
        "predictions": (4, 2),
        "call_tasks": (4, 1),
        "outcomes": (4, 2),
        "dead_letters": (2, 0),
    }
    for table in TABLES:
        expected = lake.expected(table.name)
        frame = pd.read_parquet(lake.path(table.name))
        written = pq.read_schema(lake.path(table.name))
        # The contract's name, and whether the day was over when exported (it was).
        assert written.metadata == {**table.schema.metadata, COMPLETE_KEY: b"true"}
        assert written.equals(table.schema)
        assert list(frame.columns) == table.schema.names
        assert str(frame.kafka_timestamp.dtype) == "datetime64[ms, UTC]"
        assert list(frame.valid) == [s.valid for s in expected]
        rows = pq.read_table(lake.path(table.name)).to_pylist()
        # Nothing dropped, nothing from another day, in (topic, partition, offset) order.
        assert [(r["kafka_topic"], r["kafka_partition"], r["kafka_offset"]) for r in rows] == [
            s.where for s in expected
        ]
        for row, sent in zip(rows, expected, strict=True):
            assert row["kafka_timestamp"] == datetime.fromtimestamp(sent.timestamp_ms / 1000, UTC)
            assert row["kafka_key"] == (None if sent.key is None else sent.key.decode())
            assert row["value"] == (
                None if sent.value is None else sent.value.decode("utf-8", "backslashreplace")
            )
            assert (row["valid"], row["invalid_kind"]) == (sent.valid, sent.kind)
            assert (row["invalid_reason"] is None) == sent.valid


def test_contract_fields_are_typed_columns(lake: Lake) -> None:
    prospects = pd.read_parquet(lake.path("prospects")).set_index("kafka_key")
    assert prospects.loc["c2", "occurred_at"] == pd.Timestamp("2026-03-29T08:00:00Z")
    assert prospects.loc["c3", "age"] == 99 and prospects.loc["c3", "job"] == "technician"
    assert str(prospects["age"].dtype) == "Int64" or prospects["age"].dtype.kind in "if"
    assert pd.isna(prospects.loc["c4", "age"]) and pd.isna(prospects.loc["c4", "event_id"])
    assert prospects.loc["c5", "invalid_reason"].startswith("invalid prospect event: duration")
    not_utf8 = prospects[prospects.invalid_kind == "not_utf8"].iloc[0]
    assert not_utf8.value == "\\xff\\xfe{}"

    predictions = pd.read_parquet(lake.path("predictions")).set_index("kafka_key")
    assert {f"feature_{name}" for name in FEATURES} <= set(predictions.columns)
    assert "features" not in predictions.columns
    e1 = predictions.loc["e1"]
    assert (e1.feature_age, e1.feature_job, e1.feature_pdays) == (41, "technician", -1)
    assert (e1.score, e1.priority, e1.model_version) == (0.42, "high", 3)
    assert e1.scored_at == pd.Timestamp("2026-03-29T09:00:00Z")
    assert "features.age" in predictions.loc["e4", "invalid_reason"]
    assert pd.isna(predictions.loc["e4", "feature_age"])

    tasks = pd.read_parquet(lake.path("call_tasks"))
    assert sorted(tasks.priority.dropna()) == ["high", "low", "medium"]
    assert set(tasks.kafka_topic) == set(lake.settings.task_topics.values())

    outcomes = pd.read_parquet(lake.path("outcomes")).set_index("kafka_key")
    assert outcomes.loc["o1", "event_id"] == "e-1" and pd.isna(outcomes.loc["o2", "event_id"])
    assert outcomes.loc["o2", "task_id"] == "t-2" and bool(outcomes.loc["o2", "subscribed"])
    assert outcomes.loc["o1", "called_at"] == pd.Timestamp("2026-03-29T10:00:00Z")

    letters = pd.read_parquet(lake.path("dead_letters")).set_index("kafka_key")
    assert base64.urlsafe_b64decode(letters.loc["d1", "payload"]) == b"\xff\x00"
    assert json.loads(letters.loc["d1", "field_errors"])[0]["rule"] == "int_type"
    assert letters.loc["d2", "source_topic"] == lake.settings.topic_outcomes


def test_read_table_reads_the_lake_back(lake: Lake) -> None:
    frame = read_table(lake.url, "predictions")
    direct = pd.read_parquet(lake.path("predictions"))
    pd.testing.assert_frame_equal(frame.drop(columns="date"), direct)
    assert set(frame.date) == {DAY.isoformat()}
    assert len(read_table(lake.url, "outcomes", dates=[DAY.isoformat()])) == 4
    with pytest.raises(LakeError, match=r"no export for 2026-03-30"):
        read_table(lake.url, "outcomes", dates=[DAY, NEXT_DAY])
    with pytest.raises(LakeError, match="unknown table 'nope'"):
        read_table(lake.url, "nope")


def test_rerun_is_byte_identical_and_switches_format(lake: Lake, tmp_path: Path) -> None:
    root = Path(lake.url)
    before = digests(root)
    assert len(before) == len(TABLES)
    export_day(lake.settings, DAY, url=lake.url)
    assert digests(root) == before
    # No staging folder is left behind (readers skip them, but they would pile up).
    assert not list(root.rglob("_tmp*"))
    assert len(read_table(lake.url, "prospects", dates=[DAY])) == 8

    # The same day as CSV elsewhere reads back equal; switching format leaves one part.
    other = str(tmp_path / "lake")
    export_day(lake.settings, DAY, url=other, fmt="csv")
    for table in TABLES:
        pd.testing.assert_frame_equal(
            read_table(other, table.name), read_table(lake.url, table.name, dates=[DAY])
        )
    export_day(lake.settings, DAY, url=other, fmt="parquet")
    assert sorted(digests(Path(other))) == sorted(before)


def test_the_next_day_and_an_empty_day_keep_the_schema(lake: Lake) -> None:
    export_day(lake.settings, NEXT_DAY, url=lake.url)
    empty_day = DAY - timedelta(days=30)
    result = export_day(lake.settings, empty_day, url=lake.url)
    assert all(t.rows == 0 for t in result.tables)
    for table in TABLES:
        for day in (NEXT_DAY, empty_day):
            path = lake.path(table.name, day)
            assert pq.read_schema(path).equals(table.schema)
            assert len(pd.read_parquet(path)) == len(lake.expected(table.name, day))
        both = read_table(lake.url, table.name, dates=[DAY, NEXT_DAY])
        assert len(both) == len(lake.expected(table.name)) + len(
            lake.expected(table.name, NEXT_DAY)
        )
        assert len(read_table(lake.url, table.name, dates=[empty_day])) == 0
    # NEXT_DAY's dead letters are one invalid record: the typed columns are there, all null.
    only_invalid = pq.read_table(lake.path("dead_letters", NEXT_DAY))
    assert only_invalid.column("invalid_kind").to_pylist() == ["not_json"]
    assert only_invalid.column("received_at").null_count == 1
    empty = read_table(lake.url, "prospects", dates=[empty_day])
    assert list(empty.columns) == [*TABLES_BY_NAME["prospects"].schema.names, "date"]


def test_memory_url(lake: Lake, unique: str) -> None:
    url = f"memory://lake-{unique}"
    result = export_day(lake.settings, DAY, url=url, fmt="csv")
    fs = fsspec.filesystem("memory")
    assert sorted(fs.find(f"/lake-{unique}")) == sorted(
        f"/lake-{unique}/{t.name}/date={DAY.isoformat()}/part-0.csv" for t in TABLES
    )
    assert result.tables[0].url.startswith("memory://")
    for table in TABLES:
        pd.testing.assert_frame_equal(
            read_table(url, table.name), read_table(lake.url, table.name, dates=[DAY])
        )
    fs.rm(f"/lake-{unique}", recursive=True)


def test_unreachable_broker_fails_in_one_line_and_keeps_the_export(
    lake: Lake, tmp_path: Path
) -> None:
    root = Path(lake.url)
    before = digests(root)
    down = lake.settings.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{free_port()}", "export_read_timeout_seconds": 3}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCORE_")}
    env |= down.as_env()
    done = subprocess.run(
        [CALLSCORE, "export", "--date", DAY.isoformat(), "--to", lake.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("callscore: error: Kafka at 127.0.0.1:"), done.stderr
    assert "did not answer" in done.stderr
    assert done.stdout == ""
    assert digests(root) == before


def test_each_partition_is_read_up_to_the_first_record_past_the_day_and_its_lateness(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    """A partition is read up to its first record stamped CALLSCORE_EXPORT_MAX_LATENESS_SECONDS
    (an hour) after the day: a record of the day written after one stamped that late is not
    exported (the bound), one written after a record within the lateness is. Other partitions
    read on. The local broker answers every time lookup with 0, so here each partition is read
    from its beginning and the day before is filtered out (a real broker seeks past it)."""
    settings = isolated_settings(
        uuid.uuid4().hex[:10],
        tmp_path,
        partitions=1,
        **kafka_broker.client_settings(),
        export_timezone="Europe/Berlin",
        export_read_timeout_seconds=30,
    )
    assert settings.export_max_lateness_seconds == 3600
    ensure_topics(settings)
    p = settings.topic_prospects

    def prospect(key: str, timestamp_ms: int) -> Sent:
        return Sent(
            "prospects", p, key.encode(), _json(valid_event(event_id=key)), timestamp_ms, True
        )

    sent = produce_plan(
        settings,
        [
            prospect("day-before", START_MS - HOUR_MS),
            prospect("in-day", START_MS + 3 * HOUR_MS),
            prospect("half-an-hour-after", END_MS + HOUR_MS // 2),
            prospect("in-day-after-one-within-lateness", END_MS - HOUR_MS),
            prospect("two-hours-after", END_MS + 2 * HOUR_MS),
            prospect("in-day-after-one-past-lateness", START_MS + HOUR_MS),
            # Another partition (topic) is not stopped by the prospects' record two hours after.
            Sent(
                "predictions",
                settings.topic_predictions,
                b"e1",
                _json(_prediction("e-1")),
                START_MS + HOUR_MS,
                True,
            ),
        ],
    )
    assert {s.partition for s in sent} == {0}
    url = str(tmp_path / "lake")
    result = export_day(settings, DAY, url=url)
    assert {t.table: t.rows for t in result.tables} == {
        "prospects": 2,
        "predictions": 1,
        "call_tasks": 0,
        "outcomes": 0,
        "dead_letters": 0,
    }
    rows = pq.read_table(f"{url}/prospects/date={DAY.isoformat()}/part-0.parquet").to_pylist()
    assert [(r["kafka_key"], r["kafka_offset"]) for r in rows] == [
        ("in-day", 1),
        ("in-day-after-one-within-lateness", 3),
    ]
    rows = pq.read_table(f"{url}/predictions/date={DAY.isoformat()}/part-0.parquet").to_pylist()
    assert [(r["kafka_key"], r["kafka_offset"]) for r in rows] == [("e1", 0)]


def test_cli_export_and_bad_date(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in lake.settings.as_env().items():
        monkeypatch.setenv(name, value)
    url = str(tmp_path / "cli-lake")
    assert main(["export", "--date", DAY.isoformat(), "--to", url, "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "prospects: 8 rows, 5 invalid" in out and "dead_letters: 2 rows, 0 invalid" in out
    assert (tmp_path / f"cli-lake/outcomes/date={DAY.isoformat()}/part-0.csv").is_file()

    assert main(["export", "--date", "2026-02-30", "--to", url]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--date" in err and "YYYY-MM-DD" in err

    assert main(["export", "--date", DAY.isoformat(), "--to", "nope://bucket/lake"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "callscore: error: cannot open the lake at nope://bucket/lake: Protocol not known: nope"
    )


def test_read_table_fills_columns_an_older_file_lacks_and_reads_empty_csv(unique: str) -> None:
    url = f"memory://older-{unique}"
    outcomes = TABLES_BY_NAME["outcomes"]
    record = Record("o", 0, 5, b"k", _outcome(event_id="e-1", notes="called back"), {}, START_MS)
    older = to_arrow(outcomes, [record]).drop_columns(["notes"])
    write_day(url, DAY, {"outcomes": encode(older, "parquet")}, "parquet")
    empty = {t.name: encode(t.schema.empty_table(), "csv") for t in TABLES}
    write_day(url, NEXT_DAY, empty, "csv")
    frame = read_table(url, "outcomes")
    assert list(frame.columns) == [*outcomes.schema.names, "date"]
    assert frame.notes.isna().all() and list(frame.event_id) == ["e-1"]
    assert list(frame.date) == [DAY.isoformat()]
    for table in TABLES:
        assert list(read_table(url, table.name, dates=[NEXT_DAY]).columns) == [
            *table.schema.names,
            "date",
        ]
    fsspec.filesystem("memory").rm(f"/older-{unique}", recursive=True)


# --- the schedule: pure time functions and the loop with a fake clock (no broker) ---


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("now", "at", "expected"),
    [
        ("2026-06-10T01:59:00+00:00", "02:00", "2026-06-10T02:00:00+00:00"),
        ("2026-06-10T02:00:00+00:00", "02:00", "2026-06-11T02:00:00+00:00"),
        ("2026-06-10T23:30:00+00:00", "00:15", "2026-06-11T00:15:00+00:00"),
    ],
)
def test_next_run_in_utc(now: str, at: str, expected: str) -> None:
    hours, minutes = map(int, at.split(":"))
    assert next_run(utc(now), time(hours, minutes), ZoneInfo("UTC")) == utc(expected)


def test_next_run_across_berlin_dst_changes() -> None:
    two = time(2, 0)
    # Spring forward (29 March 2026): 02:00 does not exist; the run is 24 h after the last one.
    before_spring = next_run(utc("2026-03-28T03:00:00+01:00"), two, BERLIN)
    assert before_spring == utc("2026-03-29T01:00:00+00:00")
    assert before_spring - utc("2026-03-28T02:00:00+01:00") == timedelta(hours=24)
    assert next_run(before_spring, two, BERLIN) == utc("2026-03-30T02:00:00+02:00")
    # Fall back (25 October 2026): 02:00 happens twice; the run is at the first one, once.
    first = next_run(utc("2026-10-24T12:00:00+02:00"), two, BERLIN)
    assert first == utc("2026-10-25T02:00:00+02:00")
    second_two = utc("2026-10-25T02:00:00+01:00")
    assert next_run(first, two, BERLIN) == next_run(second_two, two, BERLIN)
    assert next_run(first, two, BERLIN) == utc("2026-10-26T02:00:00+01:00")
    assert next_run(first, two, BERLIN) - first == timedelta(hours=25)
    # Every run exports the local day before it.
    assert day_to_export(before_spring, BERLIN) == date(2026, 3, 28)
    assert day_to_export(first, BERLIN) == date(2026, 10, 24)
    assert previous_run(utc("2026-03-29T05:00:00+00:00"), two, BERLIN) == before_spring


def test_local_days_last_23_24_or_25_hours() -> None:
    def hours(day: date) -> float:
        start, end = day_window(day, BERLIN)
        return (end - start) / HOUR_MS

    assert [hours(date(2026, 3, 29)), hours(date(2026, 6, 1)), hours(date(2026, 10, 25))] == [
        23,
        24,
        25,
    ]
    assert day_window(date(2026, 6, 1), BERLIN)[0] == int(
        utc("2026-05-31T22:00:00+00:00").timestamp() * 1000
    )


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def read(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= 60
        self.now += timedelta(seconds=seconds)


def test_schedule_retries_a_failed_run_each_minute_then_waits_for_the_next_day(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        _env_file=None, export_timezone="Europe/Berlin", export_time="02:00", export_retries=2
    )
    clock = FakeClock(utc("2026-03-28T10:00:00+01:00"))
    calls: list[tuple[date, datetime]] = []

    def export(day: date) -> ExportResult:
        calls.append((day, clock.read()))
        if day == date(2026, 3, 28):
            raise CallscoreError("Kafka at nowhere did not answer")
        return ExportResult(day, "x", "parquet", (TableExport("prospects", "x", 1, 0),))

    url = str(tmp_path / "lake")
    with caplog.at_level(logging.INFO, logger="callscore.export"):
        run_schedule(settings, url, export, now=clock.read, sleep=clock.sleep, runs=2)
    assert calls == [
        # At start the lake lacks the day the last run was due for: exported at once.
        (date(2026, 3, 27), utc("2026-03-28T09:00:00+00:00")),
        # 1 + 2 tries, a minute apart, at 03:00 CEST (02:00 does not exist that day).
        (date(2026, 3, 28), utc("2026-03-29T01:00:00+00:00")),
        (date(2026, 3, 28), utc("2026-03-29T01:01:00+00:00")),
        (date(2026, 3, 28), utc("2026-03-29T01:02:00+00:00")),
        (date(2026, 3, 29), utc("2026-03-30T00:00:00+00:00")),
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert any("failed (try 3 of 3)" in m and "did not answer" in m for m in messages)
    assert any(m.startswith("giving up on 2026-03-28 after 3 tries") for m in messages)
    assert any(m.startswith("exported 2026-03-29") for m in messages)

    # Once the lake holds that day, a restart does not export it again.
    write_day(
        url,
        date(2026, 3, 29),
        {t.name: encode(t.schema.empty_table(), "parquet") for t in TABLES},
        "parquet",
    )
    calls.clear()
    clock.now = utc("2026-03-30T10:00:00+02:00")
    run_schedule(settings, url, export, now=clock.read, sleep=clock.sleep, runs=1)
    assert calls == [(date(2026, 3, 30), utc("2026-03-31T00:00:00+00:00"))]
