"""The bench suite's pure parts on a made-up result document, read as a results file is: ratios,
targets, tables, CLI parsing. No broker and no timing (the suite itself is run by hand:
`python -m bench`)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console

from bench import resources
from bench.__main__ import options_from, parser
from bench.compare import figures
from bench.compare import render as render_comparison
from bench.context import Options
from bench.overrides import settings_overrides
from bench.results import SuiteResult
from bench.scenarios.backlog import backlog_result, queue_entry_event
from bench.scenarios.reload import largest_gap
from bench.suite import DEFAULT, SCENARIOS
from bench.tables import QUEUE_TARGET, ratios, render, summarised, targets
from core.topic_reader import Record


def backlog(rate: float, consumer_cpu: float, **extra: Any) -> dict[str, Any]:
    return {
        "events": 20_000,
        "outputs": 20_000,
        "lost": 0,
        "repeated": 0,
        "span_seconds": 20_000 / rate,
        "events_per_s": rate,
        "cpu_seconds_per_10k": {"worker-0": consumer_cpu, "broker": 0.5},
        "peak_rss_mb": [300.0],
        **extra,
    }


def http_load(requests_per_s: float, p99_ms: float, statuses: dict[str, int]) -> dict[str, Any]:
    return {
        "events_per_request": 1,
        "concurrency": 2,
        "seconds": 8.0,
        "warmup_seconds": 0.5,
        "warmup_status": 200,
        "requests": sum(statuses.values()),
        "statuses": statuses,
        "requests_per_s": requests_per_s,
        "events_per_s": requests_per_s,
        "p50_ms": 30.0,
        "p99_ms": p99_ms,
        "max_ms": p99_ms,
    }


def reload_result(**figures: Any) -> dict[str, Any]:
    return {
        "rate_events_per_s": 300.0,
        "events": 3000,
        "largest_gap_ms": 400,
        "largest_gap_starts_ms_after_publish": 100,
        "largest_gap_around_reload_ms": 400,
        "largest_input_gap_ms": 50,
        "publish_to_first_v2_task_ms": 600,
        "lost": 0,
        "scored_twice": 0,
        "tasks_per_version": {"1": 1500, "2": 1500},
        "models_loaded_metric": 2.0,
        "serving_version_at_end": 2.0,
        "latency": {"events": 3000, "p50_ms": 40.0, "p99_ms": 90.0, "max_ms": 400.0},
        **figures,
    }


def parsed(document: dict[str, Any]) -> SuiteResult:
    """The document as `python -m bench compare` reads a results file."""
    return SuiteResult.model_validate(document)


def document() -> dict[str, Any]:
    return {
        "started_at": "2026-01-01T00:00:00+00:00",
        "machine": {
            "cpus": 2,
            "cpu_model": "test",
            "python": "3.11",
            "platform": "test",
            "packages": {},
            "product_commit": "abc",
            "product_dir": "/test",
        },
        "load_average": {"start": [1.0, 1.0, 1.0], "end": [2.0, 1.0, 1.0]},
        "options": {"backlog": 20_000},
        "overrides": {},
        "data_source": "synthetic: test",
        "production_model": "test",
        "workdir": "/tmp/test",
        "settings": {"batch_max_size": 500},
        "scenarios": {
            "confluent_loop": backlog(40_000, 0.2),
            "faust_passthrough": backlog(5_000, 2.0),
            "scorer_production": backlog(4_500, 2.5, mean_batch_size=480.0, queue_enabled=True),
            "scorer_no_queue": backlog(5_000, 2.0, queue_enabled=False),
            "scorer_small": backlog(5_000, 2.1),
            "scorer_two_workers": backlog(6_000, 2.6),
            "per_event": backlog(90, 150.0),
            "latency": {
                "rate_events_per_s": 500.0,
                "warmup": {"events": 1500, "p50_ms": 40.0, "p99_ms": 150.0, "max_ms": 200.0},
                "steady": {"events": 10_000, "p50_ms": 40.0, "p99_ms": 80.0, "max_ms": 95.0},
                "loaded-1": {"events": 6000, "p50_ms": 45.0, "p99_ms": 100.0, "max_ms": 120.0},
                "loaded-100": {"events": 6000, "p50_ms": 50.0, "p99_ms": 140.0, "max_ms": 160.0},
                "quiet": {"events": 6000, "p50_ms": 40.0, "p99_ms": 64.0, "max_ms": 90.0},
                "api-loaded-1": {"events": 6000, "p50_ms": 41.0, "p99_ms": 88.0, "max_ms": 99.0},
                "api-loaded-100": {"events": 6000, "p50_ms": 42.0, "p99_ms": 96.0, "max_ms": 99.0},
                "http_alone": {"1": http_load(60.0, 50.0, {"200": 480})},
            },
            "reload": reload_result(),
        },
    }


def test_ratios_are_side_by_side_quotients() -> None:
    r = ratios(parsed(document()))
    assert r["production_vs_faust_passthrough"] == 0.9
    assert r["batching_vs_per_event"] == 50.0
    assert r["two_workers_vs_one"] == 1.33
    assert r["stream_p99_under_score_load"] == 1.75  # the worse request size: 140 / 80
    # against the rounds' quiet phases, which ran beside the loaded ones: 96 / 64
    assert r["stream_p99_under_api_score_load"] == 1.5
    assert r["production_cpu_per_event_vs_faust_passthrough"] == 1.25
    assert r["queue_vs_no_queue"] == 0.9
    assert r["queue_cpu_per_event_vs_no_queue"] == 1.25


def test_each_target_met_or_not_with_its_ratio() -> None:
    found = {t.name: t for t in targets(parsed(document()))}
    assert len(found) == 6
    met = {name: t.met for name, t in found.items()}
    assert met["scorer (production model) ≥ 0.8x Faust pass-through"] is True
    assert met["batching ≥ 10x the per-event peer"] is True
    assert met["p99 ≤ 100 ms at 500 ev/s (local broker)"] is True
    assert met["reload gap ≤ 1 s with 0 lost, 0 twice"] is True
    assert met["/score load on `callscore api` raises stream p99 ≤ 1.5x"] is True
    assert met[QUEUE_TARGET] is True
    assert found[QUEUE_TARGET].ratio == 0.9
    assert found["/score load on `callscore api` raises stream p99 ≤ 1.5x"].ratio == 1.5


def test_a_reload_that_loses_an_event_or_shows_one_version_is_not_met() -> None:
    result = document()
    result["scenarios"]["reload"]["lost"] = 1
    found = {t.name: t for t in targets(parsed(result))}
    assert not found["reload gap ≤ 1 s with 0 lost, 0 twice"].met
    result["scenarios"]["reload"].update(lost=0, tasks_per_version={"1": 3000})
    found = {t.name: t for t in targets(parsed(result))}
    assert not found["reload gap ≤ 1 s with 0 lost, 0 twice"].met


def test_the_queue_target_fails_beyond_20_percent_and_needs_a_queue_to_compare() -> None:
    result = document()
    result["scenarios"]["scorer_production"]["events_per_s"] = 3_900
    found = {t.name: t for t in targets(parsed(result))}
    assert found[QUEUE_TARGET].met is False and found[QUEUE_TARGET].ratio == 0.78
    # `--set queue_enabled=false`: both scenarios ran without the queue, nothing to compare.
    result["scenarios"]["scorer_production"]["queue_enabled"] = False
    assert {t.name: t for t in targets(parsed(result))}[QUEUE_TARGET].met is None


def test_the_queue_drain_counts_each_event_once_by_its_changelog_entry() -> None:
    def entry(offset: int, event_id: str, at_ms: int) -> Record:
        value = json.dumps({"prospect_id": f"p-{event_id}", "newest_event_id": event_id})
        return Record("state", 0, offset, b"k", value.encode(), {}, at_ms)

    records = [entry(0, "e1", 1_000), entry(1, "e2", 1_500), entry(2, "e2", 2_000)]
    result = backlog_result(records, ["e1", "e2", "e3"], queue_entry_event)
    assert (result.lost, result.repeated, result.span_seconds) == (1, 1, 1.0)
    assert result.events_per_s == 2


def test_unmeasured_targets_say_so() -> None:
    result = document()
    result["scenarios"] = {"faust_passthrough": result["scenarios"]["faust_passthrough"]}
    assert all(t.met is None for t in targets(parsed(result)))
    assert summarised(parsed(result)).ratios["production_vs_faust_passthrough"] is None


def test_render_prints_every_table_and_a_failed_scenario() -> None:
    result = document()
    result["scenarios"]["scorer_small"] = {"error": "TimeoutError: boom"}
    result["scenarios"]["latency"]["steady"]["p99_ms"] = 150.0  # over the 100 ms target
    out = io.StringIO()
    render(parsed(result), Console(file=out, width=200))
    text = out.getvalue()
    for expected in ("Throughput", "End-to-end latency", "POST /score", "Hot reload", "Targets"):
        assert expected in text
    assert "scorer_small failed" in text and "boom" in text
    assert "NOT met" in text


def test_cli_options_and_settings_overrides() -> None:
    quick = options_from(parser().parse_args(["--quick", "--backlog", "123"]))
    assert quick.backlog == 123 and quick.per_event_backlog < 1000
    assert settings_overrides(["batch_max_wait_seconds=0.01"]) == {"batch_max_wait_seconds": "0.01"}
    with pytest.raises(SystemExit):
        settings_overrides(["no_such_field=1"])
    assert set(DEFAULT) <= set(SCENARIOS) and "latency_only" not in DEFAULT


def test_the_broker_is_named_or_an_old_result_said_to_be_tansu() -> None:
    result = document()
    result["broker"] = {"kind": "kafka", "origin": "Apache Kafka 3.9.1 (1 node)"}
    out = io.StringIO()
    render(parsed(result), Console(file=out, width=200))
    assert "broker: Apache Kafka 3.9.1 (1 node) (kafka)" in out.getvalue()
    older = document()  # written before the bench recorded its broker: Tansu then
    out = io.StringIO()
    render_comparison(parsed(older), parsed(result), ("old", "new"), Console(file=out, width=200))
    assert "broker tansu (not recorded" in out.getvalue() and "Apache Kafka 3.9.1" in out.getvalue()


def test_broker_and_tiny_options() -> None:
    args = parser().parse_args(["--tiny", "--broker", "tansu"])
    tiny = options_from(args)
    assert args.broker == "tansu" and parser().parse_args([]).broker == "kafka"
    assert tiny.rounds == 1 and tiny.load_rounds == 1 and tiny.drain_timeout_seconds <= 60
    assert tiny.backlog < Options().quick().backlog
    with pytest.raises(SystemExit):  # one size at a time
        parser().parse_args(["--tiny", "--quick"])


def test_cpu_window_sums_a_clusters_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    spent = {1: 10.0, 2: 100.0, 3: 200.0}  # CPU seconds so far, by pid
    monkeypatch.setattr(resources, "tree_cpu_seconds", lambda pid: spent[pid])
    window = resources.CpuWindow({"consumer": 1, "broker": [2, 3]})  # a cluster of two nodes
    window.start()
    spent.update({1: 11.5, 2: 102.0, 3: 203.0})
    assert window.stop() == {"consumer": 1.5, "broker": 5.0}


def test_score_errors_make_the_load_target_unmeasured() -> None:
    result = document()
    result["scenarios"]["latency"]["http_alone"]["1"]["statuses"] = {"500": 10, "503": 2}
    name = "/score load on `callscore api` raises stream p99 ≤ 1.5x"
    target = {t.name: t for t in targets(parsed(result))}[name]
    assert target.met is None and "500" in target.value


def test_largest_gap() -> None:
    assert largest_gap([5, 1, 2, 10]) == (5, 5)
    assert largest_gap([7]) == (0, 0)


def test_compare_puts_two_runs_side_by_side() -> None:
    before, after = document(), document()
    after["scenarios"]["scorer_production"]["events_per_s"] = 9_000
    before["scenarios"].pop("reload")
    rows = {label: (a, b) for label, a, b in figures(parsed(before), parsed(after))}
    assert rows["scorer, production model: events/s"] == (4_500.0, 9_000.0)
    assert rows["reload largest gap ms"] == (None, 400.0)
    out = io.StringIO()
    render_comparison(parsed(before), parsed(after), ("old", "new"), Console(file=out, width=200))
    assert "old vs new" in out.getvalue() and "not measured" in out.getvalue()
