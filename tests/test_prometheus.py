"""deploy/prometheus/ loaded by a real Prometheus: promtool checks the configuration and the rules
and runs alerts.test.yml, and a `prometheus` server on loopback scrapes a running scorer and monitor
and evaluates alerts.yml on what it scraped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from callscore.processes import Child
from core.kafka import ensure_topics
from core.local_broker import free_port
from testkit.harness import (
    ApiWorker,
    MonitorWorker,
    StreamWorker,
    publish_model,
    worker_settings,
)

PROMETHEUS_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
PROMTOOL_TIMEOUT_SECONDS = 60
START_TIMEOUT_SECONDS = 30
SCRAPE_TIMEOUT_SECONDS = 60


def binary(name: str) -> str:
    """The tool's path; missing, it fails under CI (which installs it) and skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed; .ci/run installs it (Debian's prometheus)")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
    )


def alert_names() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"]]


def config_with_local_rules(config: dict[str, Any]) -> dict[str, Any]:
    """The compose file mounts deploy/prometheus/ files under /etc/prometheus/: point there."""
    return {
        **config,
        "rule_files": [str(PROMETHEUS_DIR / Path(path).name) for path in config["rule_files"]],
    }


# --- promtool -------------------------------------------------------------------------------------


def test_promtool_accepts_the_scrape_configuration(tmp_path):
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(config_with_local_rules(yaml.safe_load(CONFIG.read_text()))))
    done = promtool("check", "config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_alert_rules():
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alert_names())
    assert names - firing == set(), "alerts without a test on which they fire"
    assert names - quiet == set(), "alerts without a test on which they stay quiet"
    # a misspelt name would pass its quiet test without testing anything
    assert (firing | quiet) - names == set(), "tests of alerts that alerts.yml does not define"


def test_alert_rules_pass_their_unit_tests():
    done = promtool("test", "rules", str(ALERT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


# --- a real Prometheus ----------------------------------------------------------------------------


@dataclass
class PrometheusServer:
    child: Child
    port: int

    def api(self, path: str, **params: str) -> Any:
        """The `data` of one successful /api/v1 answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}{query}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def ready(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as answer:
            return bool(answer.status == 200)

    def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        what: str,
        workers: tuple[StreamWorker, ...] = (),
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.child.check_alive()
            for worker in workers:
                if worker.process.poll() is not None:
                    raise AssertionError(f"{worker.COMMAND[0]} exited:\n{worker.log()}")
            try:
                if predicate():
                    return
            except (OSError, urllib.error.URLError):
                pass  # not listening yet
            time.sleep(0.2)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what}; prometheus log:\n"
            f"{self.child.log_tail()}"
        )


def loopback_config(targets: dict[str, str]) -> dict[str, Any]:
    """prometheus.yml's jobs with loopback targets, 1 s intervals and the real alerts.yml."""
    config = config_with_local_rules(yaml.safe_load(CONFIG.read_text()))
    config["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    jobs = config["scrape_configs"]
    assert {job["job_name"] for job in jobs} == set(targets)
    for job in jobs:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return config


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], PrometheusServer]]:
    """Start `prometheus` on a free loopback port with a config; stopped at teardown."""
    executable = binary("prometheus")  # before the test starts anything
    started: list[PrometheusServer] = []

    def start(config: dict[str, Any]) -> PrometheusServer:
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        port = free_port()
        argv = [
            executable,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        server = PrometheusServer(
            Child.start("prometheus", argv, tmp_path / "prometheus.log", {}), port
        )
        started.append(server)
        server.wait_until(server.ready, START_TIMEOUT_SECONDS, "/-/ready")
        return server

    try:
        yield start
    finally:
        for server in started:
            server.child.stop(grace=10)


@pytest.mark.slow
def test_prometheus_scrapes_scorer_and_monitor_and_evaluates_the_alerts(
    kafka_settings, tmp_path, workers, prometheus
):
    settings = worker_settings(kafka_settings, tmp_path, monitor_http_port=free_port())
    ensure_topics(settings)
    publish_model(settings, version=1)
    scorer = workers(settings)
    api = workers(settings, "api", ApiWorker)
    monitor = MonitorWorker(settings, tmp_path / "monitor.log")
    try:
        scorer_target = f"127.0.0.1:{settings.http_port}"
        api_target = f"127.0.0.1:{settings.api_port}"
        monitor_target = f"127.0.0.1:{settings.monitor_http_port}"
        targets = {"streamer": scorer_target, "api": api_target, "monitor": monitor_target}
        server = prometheus(loopback_config(targets))

        def scraped(job: str, target: str) -> Callable[[], bool]:
            def answered() -> bool:
                samples = server.query(f'up{{job="{job}"}} == 1')
                return [sample["metric"]["instance"] for sample in samples] == [target]

            return answered

        for job, target in targets.items():
            what = f'up{{job="{job}"}} == 1'
            server.wait_until(
                scraped(job, target), SCRAPE_TIMEOUT_SECONDS, what, (scorer, api, monitor)
            )
        # what it scraped is the scorer's own metrics: the model it serves
        server.wait_until(
            lambda: server.query('callscore_model_version{job="streamer"} == 1') != [],
            SCRAPE_TIMEOUT_SECONDS,
            "the scorer's callscore_model_version 1",
            (scorer, monitor),
        )

        expected_groups = [group["name"] for group in yaml.safe_load(ALERTS.read_text())["groups"]]

        def evaluated() -> bool:
            groups = server.api("rules")["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return (
                [group["name"] for group in groups] == expected_groups
                and [rule["name"] for rule in rules] == alert_names()
                and all(rule["health"] == "ok" for rule in rules)
                and all(not g["lastEvaluation"].startswith("0001-") for g in groups)
            )

        server.wait_until(evaluated, SCRAPE_TIMEOUT_SECONDS, "every rule evaluated with health ok")

        # the rules see the scraped data: the monitor gone, its alert goes pending
        monitor.kill()

        def monitor_down_pending() -> bool:
            return any(
                alert["labels"]["alertname"] == "CallscoreMonitorDown"
                and alert["labels"]["instance"] == monitor_target
                and alert["state"] == "pending"
                for alert in server.api("alerts")["alerts"]
            )

        server.wait_until(
            monitor_down_pending, SCRAPE_TIMEOUT_SECONDS, "CallscoreMonitorDown pending"
        )
    finally:
        monitor.kill()
        monitor.stop()
