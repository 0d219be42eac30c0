"""Two suite results side by side (e.g. the product before and after a change):

    .venv/bin/python -m bench.compare bench/results/before.json bench/results/suite.json

The two runs happened at different times on a shared machine, so their raw figures carry the
load of their moment (both load averages are printed); the within-run ratios (scorer vs
pass-through, batching vs per-event, ...) are the fairer comparison.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.report import THROUGHPUT_SCENARIOS, targets

Row = tuple[str, float | None, float | None]


def _get(document: dict[str, Any], *path: str) -> float | None:
    value: Any = document
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def _consumer_cpu(document: dict[str, Any], name: str) -> float | None:
    cpu = document.get("scenarios", {}).get(name, {}).get("cpu_seconds_per_10k") or {}
    values = [v for k, v in cpu.items() if k != "broker" and v is not None]
    return round(sum(values), 3) if values else None


def figures(before: dict[str, Any], after: dict[str, Any]) -> list[Row]:
    """(figure, before, after) for every figure either run measured."""
    rows: list[Row] = []
    for name, label in THROUGHPUT_SCENARIOS.items():
        rows.append(
            (
                f"{label}: events/s",
                _get(before, "scenarios", name, "events_per_s"),
                _get(after, "scenarios", name, "events_per_s"),
            )
        )
        rows.append(
            (f"{label}: CPU s/10k", _consumer_cpu(before, name), _consumer_cpu(after, name))
        )
    for phase in ("steady", "loaded-1", "loaded-100"):
        for stat in ("p50_ms", "p99_ms"):
            at = ("scenarios", "latency", phase, stat)
            rows.append((f"latency {phase} {stat}", _get(before, *at), _get(after, *at)))
    for key in ("http_alone", "http_under_stream"):
        for size in ("1", "100"):
            for stat in ("requests_per_s", "p99_ms"):
                path = ("scenarios", "latency", key, size, stat)
                label = f"/score {key.removeprefix('http_')} {size}/request {stat}"
                rows.append((label, _get(before, *path), _get(after, *path)))
    rows.append(
        (
            "reload largest gap ms",
            _get(before, "scenarios", "reload", "largest_gap_ms"),
            _get(after, "scenarios", "reload", "largest_gap_ms"),
        )
    )
    for key in sorted(set(before.get("ratios", {})) | set(after.get("ratios", {}))):
        rows.append((f"ratio {key}", _get(before, "ratios", key), _get(after, "ratios", key)))
    return [row for row in rows if row[1] is not None or row[2] is not None]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}".rstrip("0").rstrip(".")


def render(
    before: dict[str, Any],
    after: dict[str, Any],
    names: tuple[str, str] = ("before", "after"),
    console: Console | None = None,
) -> None:
    console = console or Console(width=160)
    for name, document in zip(names, (before, after), strict=True):
        machine = document.get("machine", {})
        console.print(
            f"{name}: product {machine.get('product_commit')} ({machine.get('product_dir')}), "
            f"started {document.get('started_at')}, load average "
            f"{document.get('load_average', {}).get('start')} → "
            f"{document.get('load_average', {}).get('end')}; data {document.get('data_source')}"
        )
    table = Table(title=f"{names[0]} vs {names[1]}")
    for column in ("figure", names[0], names[1], f"{names[1]}/{names[0]}"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for label, a, b in figures(before, after):
        ratio = round(b / a, 2) if a and b is not None else None
        table.add_row(label, _fmt(a), _fmt(b), _fmt(ratio))
    console.print(table)
    met = Table(title="Targets")
    for column in ("target", names[0], names[1]):
        met.add_column(column)
    words = {None: "not measured", True: "met", False: "NOT met"}
    for t_before, t_after in zip(targets(before), targets(after), strict=True):
        met.add_row(
            t_before.name,
            f"{words[t_before.met]} ({_fmt(t_before.ratio)})",
            f"{words[t_after.met]} ({_fmt(t_after.ratio)})",
        )
    console.print(met)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    before, after = (json.loads(p.read_text()) for p in (args.before, args.after))
    render(before, after, (args.before.stem, args.after.stem))


if __name__ == "__main__":
    main()
