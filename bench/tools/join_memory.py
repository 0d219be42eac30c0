"""Memory cost of the monitor's join window (feedback.join.OutcomeJoin), measured with tracemalloc.

    .venv/bin/python -m bench.tools.join_memory [WINDOW ...]
Prints a table and writes bench/results/join_memory.json.

Each prediction is decoded from the JSON the scorer writes (as the monitor does), so the traced
bytes are what the window keeps alive: the PredictionRecord, its features dict and strings, the
datetimes, and the join's two index entries.
"""

from __future__ import annotations

import sys
import tracemalloc
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table

from bench.results import write_results
from callscore.simulator.events import events_from_frame
from feedback.join import OutcomeJoin
from schemas import FEATURES, PredictionRecord, task_id_for
from trainer.synthetic import synthetic_bank_frame

DEFAULT_WINDOW = 200_000  # Settings.monitor_window_max_predictions
T0 = datetime(2009, 5, 1, tzinfo=UTC)


def prediction_values(count: int) -> list[bytes]:
    """`count` prediction-log values as the scorer writes them (distinct ids, real features)."""
    events = events_from_frame(synthetic_bank_frame(rows=min(count, 20_000), seed=1), "m")
    values = []
    for i in range(count):
        event = events[i % len(events)]
        event_id = f"evt-{i:012d}"
        record = PredictionRecord(
            event_id=event_id,
            task_id=task_id_for(event_id),
            prospect_id=f"cust-{i:09d}",
            occurred_at=T0 + timedelta(seconds=i),
            features={name: event[name] for name in FEATURES},
            score=0.123456789,
            priority="medium",
            percentile=55.5,
            model_version=3,
            scored_at=T0,
        )
        values.append(record.model_dump_json().encode())
    return values


def measure(window: int) -> dict[str, float]:
    values = prediction_values(window * 2)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    join = OutcomeJoin(window, timedelta(days=3650))
    for value in values:  # fill, then keep evicting: the steady state
        join.add_prediction(PredictionRecord.model_validate_json(value))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_record = (after - before) / window
    return {
        "window": window,
        "value_bytes": round(sum(map(len, values)) / len(values)),
        "traced_bytes": after - before,
        "bytes_per_prediction": round(per_record),
        "default_window_mib": round(per_record * DEFAULT_WINDOW / 2**20),
    }


def main() -> None:
    windows = [int(a) for a in sys.argv[1:]] or [10_000, 50_000]
    rows = [measure(window) for window in windows]
    table = Table(title="join window memory (OutcomeJoin of decoded PredictionRecords, steady)")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)
    print(write_results("join_memory", rows))


if __name__ == "__main__":
    main()
