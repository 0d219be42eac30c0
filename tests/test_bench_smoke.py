"""The bench suite runs end to end: every scenario of `python -m bench` once, at the tiny sizes
(`Options.tiny()`: a few hundred events, one round, drains bounded at 60 s), with the small test
model as the "production" one (no training, deterministic), on the test session's broker.

It fails when a scenario fails or hangs (a drain past its bound is a failed scenario) or when an
event is lost or scored twice anywhere. No figure is asserted: at these sizes, on a shared
machine, the rates and latencies mean nothing (bench/README.md)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from bench.context import Options
from bench.results import Backlog, Failed, Latency, Reload, SuiteResult
from bench.suite import DEFAULT, run
from bench.tables import render, score_errors
from testkit.factories import small_artifact


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_every_bench_scenario_runs_once_and_loses_nothing(kafka_broker):
    result = run(DEFAULT, Options().tiny(), {}, production=small_artifact(1), broker=kafka_broker)

    failed = {name: s.error for name, s in result.scenarios.items() if isinstance(s, Failed)}
    assert not failed
    assert set(result.scenarios) == {"latency" if n == "latency_only" else n for n in DEFAULT}
    assert result.broker is not None and result.broker.kind == kafka_broker.kind

    for name, scenario in result.scenarios.items():
        if isinstance(scenario, Backlog):
            assert (scenario.lost, scenario.repeated) == (0, 0), name
            assert scenario.outputs >= scenario.events, name
    native = result.backlog("native_loop")
    assert native is not None and native.queue_enabled is False  # tasks, as the ceilings write

    latency = result.latency()
    assert isinstance(latency, Latency)
    phases = {"warmup": latency.warmup, "steady": latency.steady, **latency.round_phases}
    assert {name: p.lost for name, p in phases.items() if p is not None and p.lost} == {}
    assert not score_errors(latency)

    reload = result.reload()
    assert isinstance(reload, Reload)
    assert (reload.lost, reload.scored_twice) == (0, 0)
    assert set(reload.tasks_per_version) == {"1", "2"}

    # The result reads back as a results file does, and its tables render.
    again = SuiteResult.model_validate_json(result.model_dump_json())
    out = io.StringIO()
    render(again, Console(file=out, width=200))
    assert "Targets" in out.getvalue()
