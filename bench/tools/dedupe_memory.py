"""Memory cost of the dedupe window (streamer.dedupe.RecentIds), measured with tracemalloc.

    .venv/bin/python -m bench.tools.dedupe_memory
Prints a table and writes bench/results/dedupe_memory.json.
"""

from __future__ import annotations

import tracemalloc
import uuid

from rich.console import Console
from rich.table import Table

from bench.results import write_results
from streamer.dedupe import RecentIds


def measure(window: int, make_id: str) -> int:
    ids = [
        str(uuid.uuid4()) if make_id == "uuid4 (36 chars)" else f"evt-{i:012d}"
        for i in range(window * 2)
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    recent = RecentIds(window)
    for event_id in ids:  # fill, then keep evicting: the steady state
        recent.seen(event_id)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before


def main() -> None:
    rows = []
    for kind in ("uuid4 (36 chars)", "evt-000000000001 (16 chars)"):
        for window in (10_000, 100_000, 1_000_000):
            # the ids are created before tracing starts but are kept alive by the window, so the
            # traced delta is the container; add the strings the window keeps alive
            container = measure(window, kind)
            string_bytes = window * (49 + (36 if kind.startswith("uuid") else 16))
            total = container + string_bytes
            rows.append(
                {
                    "id_kind": kind,
                    "window": window,
                    "container_bytes": container,
                    "id_string_bytes": string_bytes,
                    "total_mib": round(total / 2**20, 1),
                    "bytes_per_id": round(total / window),
                }
            )
    table = Table(title="dedupe window memory (RecentIds, steady state)")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)
    print(write_results("dedupe_memory", rows))


if __name__ == "__main__":
    main()
