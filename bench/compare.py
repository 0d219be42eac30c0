"""Two suite results side by side (e.g. the product before and after a change):

    .venv/bin/python -m bench compare bench/results/before.json bench/results/suite.json

The two runs happened at different times on a shared machine, so their raw figures carry the
load of their moment (both load averages are printed); the within-run ratios (scorer vs
pass-through, batching vs per-event, ...) are the fairer comparison.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.results import HttpLoad, PhaseLatency, SuiteResult, read_suite
from bench.tables import THROUGHPUT_SCENARIOS, broker_label, targets

Row = tuple[str, float | None, float | None]
Figure = Callable[[SuiteResult], float | None]


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


def _phase(key: str, stat: str) -> Figure:
    def figure(result: SuiteResult) -> float | None:
        latency = result.latency()
        phase: PhaseLatency | None = getattr(latency, key, None) if latency else None
        return _number(getattr(phase, stat)) if phase else None

    return figure


def _http(key: str, size: str, stat: str) -> Figure:
    def figure(result: SuiteResult) -> float | None:
        latency = result.latency()
        loads: dict[str, HttpLoad] = getattr(latency, key) if latency else {}
        return _number(getattr(loads[size], stat)) if size in loads else None

    return figure


def _figures() -> list[tuple[str, Figure]]:
    """Every figure a run may have measured, with how to read it from a result."""
    found: list[tuple[str, Figure]] = []
    for name, label in THROUGHPUT_SCENARIOS.items():

        def rate(result: SuiteResult, name: str = name) -> float | None:
            backlog = result.backlog(name)
            return _number(backlog.events_per_s) if backlog else None

        def cpu(result: SuiteResult, name: str = name) -> float | None:
            backlog = result.backlog(name)
            return backlog.consumer_cpu if backlog else None

        found += [(f"{label}: events/s", rate), (f"{label}: CPU s/10k", cpu)]
    phases = (("steady", "steady"), ("loaded-1", "loaded_1"), ("loaded-100", "loaded_100"))
    for phase, field in phases:
        for stat in ("p50_ms", "p99_ms"):
            found.append((f"latency {phase} {stat}", _phase(field, stat)))
    for key in ("http_alone", "http_under_stream"):
        for size in ("1", "100"):
            for stat in ("requests_per_s", "p99_ms"):
                label = f"/score {key.removeprefix('http_')} {size}/request {stat}"
                found.append((label, _http(key, size, stat)))

    def reload_gap(result: SuiteResult) -> float | None:
        reload = result.reload()
        return _number(reload.largest_gap_ms) if reload else None

    found.append(("reload largest gap ms", reload_gap))
    return found


def figures(before: SuiteResult, after: SuiteResult) -> list[Row]:
    """(figure, before, after) for every figure either run measured."""
    rows: list[Row] = [(label, read(before), read(after)) for label, read in _figures()]
    for key in sorted(set(before.ratios) | set(after.ratios)):
        rows.append((f"ratio {key}", before.ratios.get(key), after.ratios.get(key)))
    return [row for row in rows if row[1] is not None or row[2] is not None]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}".rstrip("0").rstrip(".")


def render(
    before: SuiteResult,
    after: SuiteResult,
    names: tuple[str, str] = ("before", "after"),
    console: Console | None = None,
) -> None:
    console = console or Console(width=160)
    for name, result in zip(names, (before, after), strict=True):
        machine = result.machine
        console.print(
            f"{name}: product {machine.product_commit} ({machine.product_dir}), "
            f"started {result.started_at}, load average "
            f"{result.load_average.start} → {result.load_average.end}; broker "
            f"{broker_label(result)}; data {result.data_source}"
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
    parser = argparse.ArgumentParser(
        prog="python -m bench compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("before", type=Path, help="a results file, e.g. bench/results/before.json")
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    render(read_suite(args.before), read_suite(args.after), (args.before.stem, args.after.stem))
