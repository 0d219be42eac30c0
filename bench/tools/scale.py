"""The learning loop at scale: what a scheduler check, a retrain's data load, a monitor restart
and one export day cost at 45,000, 450,000 and 4,500,000 labelled calls (issue 18).

    .venv/bin/python -m bench.tools.scale [--sizes 45000 450000 4500000] [--days 30]
                                          [--before 45000 450000] [--broker kafka|tansu]
Prints a table and writes bench/results/scale.json.

For each N, on a broker of its own (Apache Kafka; `--broker tansu` for the fallback): a synthetic
labelled history of N calls (one prediction and one outcome each, 80% of the calls reached, two
model versions, v2 served), of which `days` days sit in the lake (Parquet, written with the export's
own schema and `write_day`) and the rest, the tail, on the topics, stamped from yesterday's start to
an hour ago, as if yesterday's export had not run yet. Every measurement runs in a fresh process
(its peak RSS is its own):

- check: `Scheduler.for_cli(...).check()`, what `callscore schedule` does once a minute: the
  served manifest and the labelled history's columns (the lake, the tail found by time), in a
  process that imports what `callscore schedule` does (`bench.tools.scale_check`);
- check again: a second check in the same process; then an hour of new calls (a lake day's
  share) is produced, by another process, and a third check reads them (`new s`; `checks MiB`:
  the peak of all three);
- data load: a retrain's labelled rows with their features (`read_label_columns(features=True)`
  and `outcome_rows`);
- monitor restart: `callscore monitor` from its start until it reports caught up;
- export day: `export_day` of yesterday (most of the tail);
- before: the labelled-history read of commit 0824f64 (the lake's tables read whole and every
  record decoded, the topics read whole), in a worktree of that commit, for `--before` sizes.

The rows are synthetic (features from `trainer.synthetic`, scores random): this measures cost,
never model quality. A sample of the generated lake rows is checked against the export's own
parse of the same values (`lake.rows.to_arrow`), so the lake is what an export would write.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from bench.broker import add_broker_option, start_broker
from bench.context import publish
from bench.resources import peak_rss_mb, tree_peak_rss_mb
from bench.results import write_results
from callscore.processes import settings_env
from core.kafka import ensure_topics
from core.local_broker import BrokerKind
from core.settings import Settings
from core.topic_reader import Record
from lake.days import day_window
from lake.files import encode
from lake.rows import to_arrow
from lake.store import write_day
from lake.tables import TABLES_BY_NAME
from schemas import FEATURE_COLUMN_PREFIX, FEATURES, join_key, task_id_for
from testkit.factories import small_artifact
from testkit.harness import MonitorWorker, isolated_settings, worker_settings
from trainer.synthetic import synthetic_bank_frame

DEFAULT_SIZES = (45_000, 450_000, 4_500_000)
BEFORE_COMMIT = "0824f64"
PARTITIONS = 6
REACHED_SHARE = 0.8
FEATURE_ROWS = 45_000  # distinct feature rows, cycled
MONITOR_TIMEOUT_SECONDS = 1800.0
ROOT = Path(__file__).resolve().parents[2]


def _iso(ms: np.ndarray) -> list[str]:
    return [
        datetime.fromtimestamp(m / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
        for m in ms.tolist()
    ]


class History:
    """N synthetic labelled calls: row i is event ev-i of prospect p-i, stamped `stamps[i]`."""

    def __init__(self, count: int, stamps: np.ndarray, seed: int = 5, first: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.count = count
        self.first = first  # row i is call first + i (calls added later have ids of their own)
        self.stamps = stamps  # Kafka timestamp ms = the event's time (a live system)
        self.features = synthetic_bank_frame(FEATURE_ROWS, seed=seed)
        self.feature_row = np.arange(count) % FEATURE_ROWS
        self.score = np.round(rng.beta(2, 12, size=count), 6)
        self.version = np.where(np.arange(count) < count // 2, 1, 2)
        self.reached = rng.random(count) < REACHED_SHARE
        self.subscribed = self.reached & (rng.random(count) < self.score * 1.5)
        self.duration = np.where(self.reached, rng.integers(30, 900, size=count), 0)
        self.feature_dicts = self.features[list(FEATURES)].to_dict("records")
        self.priority = np.where(
            self.score > 0.3, "high", np.where(self.score > 0.15, "medium", "low")
        )
        self.percentile = np.round(100 * np.minimum(self.score / 0.5, 1.0), 3)

        self.tasks = [task_id_for(self.event(i)) for i in range(count)]
        self.keys = [join_key(self.event(i)) for i in range(count)]
        self.task_keys = [join_key(t) for t in self.tasks]

    def task(self, i: int) -> str:
        return self.tasks[i]

    def event(self, i: int) -> str:
        return f"ev-{self.first + i:09d}"

    def prospect(self, i: int) -> str:
        return f"p-{self.first + i}"

    def prediction_values(self, rows: np.ndarray) -> list[str]:
        at = _iso(self.stamps[rows])
        scored = _iso(self.stamps[rows] + 50)
        values = []
        for k, i in enumerate(rows.tolist()):
            values.append(
                json.dumps(
                    {
                        "event_id": self.event(i),
                        "task_id": self.task(i),
                        "prospect_id": self.prospect(i),
                        "occurred_at": at[k],
                        "features": self.feature_dicts[self.feature_row[i]],
                        "score": float(self.score[i]),
                        "priority": str(self.priority[i]),
                        "percentile": float(self.percentile[i]),
                        "model_version": int(self.version[i]),
                        "scored_at": scored[k],
                    },
                    separators=(",", ":"),
                )
            )
        return values

    def outcome_values(self, rows: np.ndarray) -> list[str]:
        called = _iso(self.stamps[rows] + 3_600_000)
        values = []
        for k, i in enumerate(rows.tolist()):
            body: dict[str, Any] = {
                "event_id": self.event(i),
                "task_id": self.task(i),
                "prospect_id": self.prospect(i),
                "called_at": called[k],
            }
            if self.reached[i]:
                body |= {
                    "disposition": "reached",
                    "subscribed": bool(self.subscribed[i]),
                    "duration_seconds": int(self.duration[i]),
                }
            else:
                body["disposition"] = "no_answer"
            values.append(json.dumps(body, separators=(",", ":")))
        return values

    def records(self, settings: Settings, rows: np.ndarray, table: str) -> list[Record]:
        """The rows as consumed records, partitioned by row (the offsets a lake day keeps)."""
        topic = settings.topic_predictions if table == "predictions" else settings.topic_outcomes
        values = self.prediction_values(rows) if table == "predictions" else None
        values = values or self.outcome_values(rows)
        stamps = self.stamps[rows] + (0 if table == "predictions" else 1)
        return [
            Record(
                topic,
                int(i % PARTITIONS),
                int(i // PARTITIONS),
                self.prospect(i).encode(),
                value.encode(),
                {},
                int(ms),
            )
            for i, value, ms in zip(rows.tolist(), values, stamps.tolist(), strict=True)
        ]

    def lake_table(self, settings: Settings, rows: np.ndarray, table: str) -> pa.Table:
        """The export's table of these rows, built column by column (the export's own parse
        costs ~50 µs a record: hours at 4.5 M); `check_sample` proves them equal."""
        records = self.records(settings, rows, table)
        schema = TABLES_BY_NAME[table].schema
        columns: dict[str, Any] = {
            "kafka_topic": [r.topic for r in records],
            "kafka_partition": [r.partition for r in records],
            "kafka_offset": [r.offset for r in records],
            "kafka_timestamp": [r.timestamp_ms for r in records],
            "kafka_key": [r.key.decode() if r.key else None for r in records],
            "value": [(r.value or b"").decode() for r in records],
            "valid": [True] * len(records),
            "event_id": [self.event(i) for i in rows.tolist()],
            "task_id": [self.task(i) for i in rows.tolist()],
            "prospect_id": [self.prospect(i) for i in rows.tolist()],
            "event_key": [self.keys[i] for i in rows.tolist()],
            "task_key": [self.task_keys[i] for i in rows.tolist()],
        }
        if table == "predictions":
            columns["priority"] = self.priority[rows]
            columns["percentile"] = self.percentile[rows]
            columns["score"] = self.score[rows]
            columns["model_version"] = self.version[rows]
            columns["occurred_at"] = pa.array(self.stamps[rows] * 1000, pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            )
            columns["scored_at"] = pa.array((self.stamps[rows] + 50) * 1000, pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            )
            frame = self.features.iloc[self.feature_row[rows]]
            for name in FEATURES:
                columns[FEATURE_COLUMN_PREFIX + name] = frame[name].to_numpy()
        else:
            columns["called_at"] = pa.array(
                (self.stamps[rows] + 3_600_000) * 1000, pa.int64()
            ).cast(pa.timestamp("us", tz="UTC"))
            columns["disposition"] = np.where(self.reached[rows], "reached", "no_answer")
            columns["subscribed"] = pa.array(
                [
                    bool(s) if r else None
                    for s, r in zip(self.subscribed[rows], self.reached[rows], strict=True)
                ]
            )
            columns["duration_seconds"] = self.duration[rows]
        arrays = [
            pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(len(rows), f.type)
            for f in schema
        ]
        sort = np.lexsort((np.array(columns["kafka_offset"]), np.array(columns["kafka_partition"])))
        return pa.Table.from_arrays(arrays, schema=schema).take(pa.array(sort))

    def check_sample(self, settings: Settings) -> None:
        """The hand-built lake rows equal the export's own parse of the same records."""
        rows = np.arange(min(self.count, 500))
        for table in ("predictions", "outcomes"):
            built = self.lake_table(settings, rows, table)
            parsed = to_arrow(TABLES_BY_NAME[table], self.records(settings, rows, table))
            if not built.equals(parsed):
                for name in built.column_names:
                    if not built[name].equals(parsed[name]):
                        raise AssertionError(
                            f"{table}.{name}: {built[name][:2]} != {parsed[name][:2]}"
                        )


def stamps_for(
    count: int, days: int, tz: ZoneInfo, today: date
) -> tuple[np.ndarray, list[date], int]:
    """Timestamps for `count` calls: `days` lake days ending the day before yesterday, then a
    tail of one day's worth over yesterday and today (before now)."""
    per_day = count // (days + 1)
    tail = count - per_day * days
    lake_days = [today - timedelta(days=days + 1 - k) for k in range(days)]
    parts = []
    for day in lake_days:
        start, end = day_window(day, tz)
        parts.append(np.linspace(start, end - 3_700_000, per_day).astype(np.int64))
    y_start, _ = day_window(today - timedelta(days=1), tz)
    now_ms = int(time.time() * 1000) - 3_700_000
    parts.append(np.linspace(y_start, now_ms, tail).astype(np.int64))
    return np.concatenate(parts), lake_days, per_day * days


def write_lake(settings: Settings, history: History, lake_days: list[date], per_day: int) -> float:
    started = time.monotonic()
    for k, day in enumerate(lake_days):
        rows = np.arange(k * per_day, (k + 1) * per_day)
        files = {
            table: encode(history.lake_table(settings, rows, table), "parquet")
            for table in ("predictions", "outcomes")
        }
        write_day(settings.export_url, day, files, "parquet")
    return round(time.monotonic() - started, 1)


def produce_tail(settings: Settings, history: History, first_row: int) -> float:
    started = time.monotonic()
    produce(settings, history, np.arange(first_row, history.count))
    return round(time.monotonic() - started, 1)


def produce(settings: Settings, history: History, rows: np.ndarray) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 50, "batch.size": 1 << 20}
    )
    for table in ("predictions", "outcomes"):
        for record in history.records(settings, rows, table):
            while True:
                try:
                    producer.produce(
                        record.topic,
                        value=record.value,
                        key=record.key,
                        partition=record.partition,
                        timestamp=record.timestamp_ms,
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
    producer.flush(120)


# --- measurements, each in a fresh process configured by the environment -------------------


def _measure_here(what: str) -> dict[str, Any]:
    settings = Settings(_env_file=None)
    started = time.monotonic()
    found: dict[str, Any] = {}
    if what == "load":
        from trainer.history import read_label_columns
        from trainer.outcomes import outcome_rows

        labels = read_label_columns(settings, features=True)
        found["rows"] = len(outcome_rows(labels.labelled))
    elif what == "export":
        from lake.export import export_day

        yesterday = datetime.now(ZoneInfo(settings.export_timezone)).date() - timedelta(days=1)
        result = export_day(settings, yesterday, url=tempfile.mkdtemp())
        found["rows"] = sum(t.rows for t in result.tables)
    found.setdefault("seconds", time.monotonic() - started)
    found.setdefault("peak_rss_mb", peak_rss_mb(os.getpid()))
    return found


# The labelled-history read before this issue, run with the worktree's code only.
BEFORE_SCRIPT = """
import json, time
from core.settings import Settings
from trainer.outcomes import read_labels
started = time.monotonic()
rows = len(read_labels(Settings(_env_file=None)).labelled)
seconds = time.monotonic() - started
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": int(hwm) / 1024}))
"""


def measure_in_process(settings: Settings, what: str, new_calls: int = 0) -> dict[str, Any]:
    env = settings_env(settings)
    argv = [sys.executable, "-c", f"import bench.tools.scale as s; s._print_measure({what!r})"]
    cwd = ROOT
    if what == "check":
        argv = [sys.executable, "-m", "bench.tools.scale_check", str(new_calls)]
    if what == "before":
        cwd = before_worktree()
        env["PYTHONPATH"] = str(cwd)
        argv = [sys.executable, "-c", BEFORE_SCRIPT]
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return found


def _print_measure(what: str) -> None:
    print(json.dumps(_measure_here(what)))


def produce_new_calls(count: int) -> None:
    """An hour of the call center's traffic, ending now, with ids of its own (the check's
    process runs this in another process: `produce-new`)."""
    settings = Settings(_env_file=None)
    now_ms = int(time.time() * 1000)
    stamps = np.linspace(now_ms - 3_600_000, now_ms, count).astype(np.int64)
    produce(settings, History(count, stamps, seed=7, first=10**8), np.arange(count))


def monitor_restart(settings: Settings, workdir: Path) -> dict[str, Any]:
    configured = worker_settings(settings, workdir, f"monitor-{uuid.uuid4().hex[:6]}")
    configured = configured.model_copy(update={"monitor_window_max_predictions": 10_000_000})
    started = time.monotonic()
    monitor = MonitorWorker(configured, workdir / "monitor.log")
    try:
        monitor.wait_until(
            lambda: monitor.metric("callscore_online_caught_up") == 1,
            MONITOR_TIMEOUT_SECONDS,
            "the monitor caught up",
        )
        return {
            "seconds": time.monotonic() - started,
            "peak_rss_mb": tree_peak_rss_mb(monitor.process.pid),
        }
    finally:
        monitor.stop()


def before_worktree() -> Path:
    path = Path(tempfile.gettempdir()) / f"callscore-before-{BEFORE_COMMIT}"
    if not path.exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), BEFORE_COMMIT],
            check=True,
            capture_output=True,
        )
    return path


def measure(count: int, days: int, before: bool, kind: BrokerKind = "kafka") -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="callscore-scale-"))
    broker = start_broker(kind, log_dir=str(workdir))
    try:
        assert broker.process is not None
        name = f"scale-{count}-{uuid.uuid4().hex[:6]}"
        settings = isolated_settings(
            name, workdir, **broker.client_settings(), partitions=PARTITIONS
        )
        ensure_topics(settings)
        publish(settings, small_artifact(1), version=1)
        publish(settings, small_artifact(2, seed=2), version=2)
        tz = ZoneInfo(settings.export_timezone)
        stamps, lake_days, in_lake = stamps_for(count, days, tz, datetime.now(tz).date())
        history = History(count, stamps)
        history.check_sample(settings)
        row: dict[str, Any] = {
            "broker": broker.origin,
            "labelled_calls": count,
            "in_lake": in_lake,
            "tail": count - in_lake,
        }
        row["lake_write_seconds"] = write_lake(settings, history, lake_days, in_lake // days)
        row["tail_produce_seconds"] = produce_tail(settings, history, in_lake)
        _log(count, row)
        for what in ("check", "load", "export"):
            # The check's process adds an hour of calls (a day's share) before its third check.
            found = measure_in_process(settings, what, max(in_lake // days // 24, 1))
            row.update({f"{what}_{k}": v for k, v in found.items()})
            _log(count, found)
        found = monitor_restart(settings, workdir)
        row.update({f"monitor_{k}": v for k, v in found.items()})
        if before:
            found = measure_in_process(settings, "before")
            row.update({f"before_{k}": v for k, v in found.items()})
        row["broker_peak_rss_mb"] = peak_rss_mb(broker.process.pid)
        _log(count, row)
        return row
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _log(count: int, found: dict[str, Any]) -> None:
    print(f"{count:,}: {found}", file=sys.stderr, flush=True)


SHOWN = (
    ("labelled_calls", "calls"),
    ("tail", "tail"),
    ("check_seconds", "check s"),
    ("check_peak_rss_mb", "check MiB"),
    ("check_again_seconds", "again s"),
    ("check_new_calls", "new calls"),
    ("check_new_seconds", "new s"),
    ("check_peak_rss_mb_after_new", "checks MiB"),
    ("load_seconds", "load s"),
    ("load_peak_rss_mb", "load MiB"),
    ("monitor_seconds", "monitor s"),
    ("monitor_peak_rss_mb", "monitor MiB"),
    ("export_rows", "export rows"),
    ("export_seconds", "export s"),
    ("export_peak_rss_mb", "export MiB"),
    ("before_seconds", "before s"),
    ("before_peak_rss_mb", "before MiB"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def main() -> None:
    if sys.argv[1:2] == ["produce-new"]:  # from bench.tools.scale_check
        produce_new_calls(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.tools.scale")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES))
    parser.add_argument("--days", type=int, default=30, help="days of history in the lake")
    parser.add_argument(
        "--before", nargs="*", type=int, default=[45_000, 450_000], help="sizes to measure 0824f64"
    )
    add_broker_option(parser)
    args = parser.parse_args()
    rows = [measure(n, args.days, n in args.before, args.broker) for n in args.sizes]
    table = Table(title="the learning loop at scale (seconds, peak RSS in MiB; fresh processes)")
    for _key, title in SHOWN:
        table.add_column(title, justify="right")
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for key, _title in SHOWN))
    Console(width=200).print(table)
    print(write_results("scale", rows))


if __name__ == "__main__":
    main()
