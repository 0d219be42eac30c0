"""docker-compose.yml, the Dockerfile and the monitoring config agree with the code (no broker).

There is no Docker engine in CI: these tests read the files and check them against the real
Settings, the real `callscore` argument parser and the real Prometheus metric declarations;
`docker-compose config -q` validates the file's syntax when the binary is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client import CollectorRegistry

from callscore.cli import build_parser
from core.settings import ENV_PREFIX, Settings, env_vars
from monitor.metrics import MonitorMetrics
from streamer.metrics import StreamMetrics

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
CLUSTER_FILE = DEPLOY / "compose-kafka-3.yml"  # the three-broker layout, over COMPOSE_FILE
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "callscore.json"
PRODUCT_IMAGE = "callqueue-scorer:"
# The README scales the scorers to three replicas: the topics need at least that many partitions.
README_REPLICAS = 3
SECRET_FIELDS = {n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
SETTINGS_VARIABLES = set(env_vars(dict.fromkeys(Settings.model_fields, "")))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """An override file merged as compose merges it, for what compose-kafka-3.yml overrides:
    mappings key by key (services, environment, depends_on, volumes), anything else replaced
    (`test_the_merge_is_composes` compares with docker-compose's own)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="module")
def cluster_compose(compose: dict[str, Any]) -> dict[str, Any]:
    return merge(compose, yaml.safe_load(CLUSTER_FILE.read_text()))


def kafka_nodes(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        n: s for n, s in services.items() if str(s.get("image", "")).startswith("apache/kafka:")
    }


def settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a service's container gets: its variables only (raises on a bad value)."""
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            patch.delenv(key)
        for key, value in environment(service).items():
            patch.setenv(key, value)
        return Settings(_env_file=None)


def product_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {n: s for n, s in services.items() if str(s.get("image", "")).startswith(PRODUCT_IMAGE)}
    assert len(found) >= 8, sorted(found)
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's variables: its env files first, then its `environment` (which wins)."""
    env: dict[str, str] = {}
    env_files = service.get("env_file", [])
    for env_file in [env_files] if isinstance(env_files, str) else env_files:
        for line in (ROOT / env_file).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env.update({k: str(v) for k, v in raw.items()})
    return env


def secret_targets(service: dict[str, Any]) -> list[str]:
    return [
        s if isinstance(s, str) else s.get("target", s["source"])
        for s in service.get("secrets", [])
    ]


def served_by(services: dict[str, dict[str, Any]], subcommand: str) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in product_services(services).items()
        if s.get("command", [None])[0] == subcommand
    }


# --- configuration: only real Settings, valid values, secrets as files -------------------------


def test_every_callscore_variable_is_a_settings_field(services):
    for name, service in services.items():
        named = [*environment(service), *secret_targets(service)]
        unknown = {v for v in named if v.startswith(ENV_PREFIX)} - SETTINGS_VARIABLES
        assert not unknown, f"service {name}: {sorted(unknown)} are not fields of core.settings"


def test_every_product_service_configures_valid_settings(services, monkeypatch):
    for name, service in product_services(services).items():
        settings = settings_of(service, monkeypatch)  # raises on any invalid value
        assert settings.partitions >= README_REPLICAS, name
        assert settings.bootstrap_servers == "kafka:19092", name
        # runnable as is: `callscore topics` refuses more replicas than brokers
        assert settings.replication_factor <= len(kafka_nodes(services)), name


def test_secrets_are_files_never_values_in_the_yaml(compose, services):
    for name, service in services.items():
        env = environment(service)
        for field in SECRET_FIELDS:
            variable = f"{ENV_PREFIX}{field.upper()}"
            assert variable not in env, f"{name} sets the secret {variable} in the YAML"
        for key in env:
            assert not re.search(r"PASSWORD$|TOKEN$|SECRET$", key), f"{name}: {key} inline"
    for secret, spec in compose["secrets"].items():
        assert set(spec) == {"file"} and spec["file"].startswith("./secrets/"), secret
    assert re.search(r"^/?secrets/$", (ROOT / ".gitignore").read_text(), re.M)


def test_only_keys_and_trainer_hold_the_signing_key(services):
    holders = {
        name
        for name, service in services.items()
        if "CALLSCORE_MODEL_SIGNING_KEY_FILE" in environment(service)
        or any(str(v).startswith("signing-key:") for v in service.get("volumes", []))
    }
    assert holders == {"keys", "trainer"}
    trainer_mounts = services["trainer"]["volumes"]
    assert "signing-key:/var/lib/callscore/signing-key:ro" in trainer_mounts
    for name in ("streamer", "monitor", "trainer"):
        assert "trusted-keys:/var/lib/callscore/trusted-keys:ro" in services[name]["volumes"], name
    # artifacts larger than the inline limit are files: writer and readers share the volume path
    artifact_dir = environment(services["trainer"])["CALLSCORE_ARTIFACT_DIR"]
    for name in ("trainer", "streamer"):
        assert any(str(v).split(":")[1] == artifact_dir for v in services[name]["volumes"]), name


# --- commands: what each container runs is a real `callscore` command ---------------------------


def test_every_product_command_is_a_real_subcommand(services):
    parser = build_parser()
    for name, service in product_services(services).items():
        if "entrypoint" in service:
            continue  # checked below
        try:
            args = parser.parse_args(service["command"])
        except SystemExit:
            pytest.fail(f"service {name}: `callscore {' '.join(service['command'])}` is invalid")
        assert callable(args.handler), name


def test_entrypoint_overrides_are_scripts_the_image_installs(services):
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name, service in product_services(services).items():
        for program in service.get("entrypoint", [])[:1]:
            assert re.search(rf"^COPY deploy/\S+ /usr/local/bin/{program}$", dockerfile, re.M), name


def test_the_keys_script_makes_one_pair_and_keeps_it(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "CALLSCORE_MODEL_SIGNING_KEY_FILE": str(tmp_path / "signing" / "model-signing.key"),
        "CALLSCORE_MODEL_TRUSTED_KEYS": str(tmp_path / "trusted"),
    }
    (tmp_path / "signing").mkdir()
    (tmp_path / "trusted").mkdir()
    script = DEPLOY / "ensure-model-keys.sh"
    for _ in range(2):
        subprocess.run([script], env=env, check=True, capture_output=True, timeout=60)
    assert sorted(p.name for p in (tmp_path / "signing").iterdir()) == ["model-signing.key"]
    assert (tmp_path / "signing" / "model-signing.key").stat().st_mode & 0o077 == 0
    assert len(list((tmp_path / "trusted").glob("*.pem"))) == 1

    from registry.keys import load_signing_key, trusted_keys

    settings = Settings(
        _env_file=None,
        model_signing_key_file=env["CALLSCORE_MODEL_SIGNING_KEY_FILE"],
        model_trusted_keys=env["CALLSCORE_MODEL_TRUSTED_KEYS"],
    )
    kid, _key = load_signing_key(settings)
    assert set(trusted_keys(settings)) == {kid}


def test_the_entrypoint_turns_secret_files_into_settings_variables(tmp_path):
    secrets, fake_bin = tmp_path / "secrets", tmp_path / "bin"
    secrets.mkdir()
    fake_bin.mkdir()
    (secrets / "CALLSCORE_API_TOKEN").write_text("t0k3n\n")
    (secrets / "unrelated").write_text("x")
    (fake_bin / "callscore").write_text(
        '#!/bin/sh\necho "$CALLSCORE_API_TOKEN|$*|${unrelated:-}"\n'
    )
    (fake_bin / "callscore").chmod(0o755)
    done = subprocess.run(
        [DEPLOY / "docker-entrypoint.sh", "stream", "-l", "info"],
        env={"PATH": f"{fake_bin}{os.pathsep}/usr/bin:/bin", "SECRETS_DIR": str(secrets)},
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert done.stdout == "t0k3n|stream -l info|\n"


# --- services: Kafka, scaling, the one-shot jobs ----------------------------------------------


def test_kafka_is_a_single_kraft_node_with_inside_and_host_listeners(services):
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "INSIDE://kafka:19092,HOST://localhost:9092"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
    ):
        assert env[key] == "1"
    assert "healthcheck" in kafka
    assert kafka["ports"] == ["127.0.0.1:9092:9092"]


def test_kafka_runs_what_the_tests_run(services):
    """The compose file's Kafka is the launcher's: the same version, the same shared settings."""
    from core.local_broker.kafka import kafka_version, shared_settings

    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{kafka_version()}"
    env = environment(kafka)
    for name, value in shared_settings(nodes=1).items():
        variable = "KAFKA_" + name.upper().replace(".", "_")
        assert str(env.get(variable)) == value, (
            f"{variable}: compose {env.get(variable)!r}, launcher {value!r}"
        )


def test_the_three_broker_layout_runs_what_the_launchers_three_nodes_run(services, cluster_compose):
    """deploy/compose-kafka-3.yml: three KRaft nodes of one cluster and quorum, each with the
    launcher's settings for a cluster of three (shared, and the topics' replication defaults)."""
    from core.local_broker.kafka import kafka_version, launcher_settings, shared_settings

    nodes = kafka_nodes(cluster_compose["services"])
    assert len(nodes) == 3
    cluster = launcher_settings(nodes=3)
    expected = shared_settings(nodes=3) | {
        name: cluster[name] for name in ("default.replication.factor", "min.insync.replicas")
    }
    voters = {f"{i}@{node['hostname']}:9093" for i, node in enumerate(nodes.values(), 1)}
    host_ports = set()
    for i, (name, node) in enumerate(nodes.items(), 1):
        assert node["image"] == f"apache/kafka:{kafka_version()}", name
        env = environment(node)
        for setting, value in expected.items():
            variable = "KAFKA_" + setting.upper().replace(".", "_")
            assert str(env.get(variable)) == value, (
                f"{name} {variable}: compose {env.get(variable)!r}, launcher {value!r}"
            )
        assert str(env["KAFKA_NODE_ID"]) == str(i), name
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert env["CLUSTER_ID"] == environment(services["kafka"])["CLUSTER_ID"], name
        assert f"INSIDE://{node['hostname']}:19092" in env["KAFKA_ADVERTISED_LISTENERS"], name
        assert f"--bootstrap-server {node['hostname']}:19092" in node["healthcheck"]["test"][1]
        assert node["restart"] == "unless-stopped", name
        (port,) = node["ports"]
        host_port = str(port).split(":")[1]
        assert f"HOST://localhost:{host_port}" in env["KAFKA_ADVERTISED_LISTENERS"], name
        host_ports.add(host_port)
    assert len(host_ports) == 3


def test_the_three_broker_layout_gives_every_client_the_cluster(cluster_compose, monkeypatch):
    """Every product service talks to all three brokers and creates topics with the launcher's
    replication for three nodes, the same as the brokers' defaults."""
    from core.local_broker.kafka import topic_replication

    services = cluster_compose["services"]
    nodes = kafka_nodes(services)
    inside = sorted(f"{node['hostname']}:19092" for node in nodes.values())
    replication = topic_replication(3)
    assert replication == {"replication_factor": 3, "min_insync_replicas": 2}
    for name, service in product_services(services).items():
        settings = settings_of(service, monkeypatch)
        assert sorted(settings.bootstrap_servers.split(",")) == inside, name
        assert settings.replication_factor == replication["replication_factor"], name
        assert settings.min_insync_replicas == replication["min_insync_replicas"], name
        for node in nodes.values():
            env = environment(node)
            assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == settings.replication_factor
            assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == settings.min_insync_replicas
    waits = services["topics"]["depends_on"]
    assert {n: waits[n]["condition"] for n in waits} == dict.fromkeys(nodes, "service_healthy")
    assert set(cluster_compose["volumes"]) >= {
        str(v).split(":")[0] for node in nodes.values() for v in node["volumes"]
    }


def test_streamer_scales(services):
    streamer = services["streamer"]
    assert "container_name" not in streamer
    for port in streamer.get("ports", []):
        parts = str(port).split(":")  # CONTAINER, HOST:CONTAINER or IP:HOST:CONTAINER
        host_port = "" if len(parts) == 1 else parts[-2]
        assert host_port == "", f"fixed host port {port}: --scale would collide"
    assert streamer["restart"] in {"always", "unless-stopped", "on-failure"}
    assert str(Settings(_env_file=None).http_port) in [str(p) for p in streamer["expose"]]


def test_one_shot_jobs_run_before_what_needs_them(services):
    for name in ("topics", "keys", "data"):
        assert services[name]["restart"] == "no", name
    needs = services["trainer"]["depends_on"]
    assert {n: needs[n]["condition"] for n in needs} == dict.fromkeys(
        ("topics", "keys", "data"), "service_completed_successfully"
    )
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["simulator"]["profiles"] == ["simulator"]
    assert served_by(services, "export")["export"]["command"] == ["export", "--schedule"]


# --- monitoring: Prometheus scrapes every /metrics; the dashboard queries real metrics ------------


def test_prometheus_scrapes_every_service_with_metrics(services):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets: set[tuple[str, int]] = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A"
            targets.update((name, sd["port"]) for name in sd["names"])
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.add((host, int(port)))
    expected = set()
    for name, service in served_by(services, "stream").items():
        expected.add((name, Settings(_env_file=None, **_fields(service)).http_port))
    for name, service in served_by(services, "api").items():
        expected.add((name, Settings(_env_file=None, **_fields(service)).api_port))
    for name, service in served_by(services, "monitor").items():
        expected.add((name, Settings(_env_file=None, **_fields(service)).monitor_http_port))
    assert expected and targets == expected


def _fields(service: dict[str, Any]) -> dict[str, str]:
    return {
        k.removeprefix(ENV_PREFIX).lower(): v
        for k, v in environment(service).items()
        if k.startswith(ENV_PREFIX)
    }


def _declared() -> dict[str, set[str]]:
    """Every sample name the code can expose -> the metric's label names."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
    }
    names: dict[str, set[str]] = {"up": set()}
    for owner in (StreamMetrics(CollectorRegistry()), MonitorMetrics(CollectorRegistry())):
        for metric in vars(owner).values():
            if not hasattr(metric, "_labelnames"):
                continue
            family = next(iter(metric.collect()))
            labels = set(metric._labelnames) | ({"le"} if family.type == "histogram" else set())
            for suffix in suffixes[family.type]:
                names[family.name + suffix] = labels
    return names


def query_problems(expr: str, legend: str, declared: dict[str, set[str]]) -> list[str]:
    """What in one PromQL query (and the legend or annotation naming its labels) is not declared."""
    metrics = set(re.findall(r"\b(callscore_[a-z_]+|up)\b(?!\s*\()", expr))
    unknown = metrics - set(declared)
    if not metrics or unknown:
        return [f"{expr}: metrics {sorted(unknown)} are not declared in streamer/"]
    labels = set().union(*(declared[m] for m in metrics)) | {"instance", "job"}
    used = {
        label.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")
    }
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        used |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    used |= set(re.findall(r"\{\{\s*(?:\$labels\.)?(\w+)\s*\}\}", legend))
    return [f"{expr}: labels {sorted(used - labels)} unknown"] if used - labels else []


def test_dashboard_queries_only_declared_metrics_and_labels():
    declared = _declared()
    dashboard = json.loads(DASHBOARD.read_text())
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            problems = query_problems(target["expr"], target["legendFormat"], declared)
            assert not problems, f"{panel['title']}: {problems}"
            queried |= set(re.findall(r"callscore_[a-z_]+", target["expr"]))
    # what the issue asks the dashboard to show
    for metric in (
        "callscore_events_consumed_total",
        "callscore_events_dead_lettered_total",
        "callscore_end_to_end_latency_seconds_bucket",
        "callscore_model_version",
        "callscore_online_roc_auc",
        "callscore_online_conversion_rate",
        "callscore_online_score_psi",
    ):
        assert metric in queried, metric
    provisioning = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert provisioning["datasources"][0]["uid"] == "prometheus"


def test_alert_rules_query_declared_metrics_with_the_settings_thresholds():
    declared = _declared()
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    by_name = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    for name, rule in by_name.items():
        problems = query_problems(rule["expr"], rule["annotations"]["summary"], declared)
        assert not problems, f"{name}: {problems}"
    defaults = Settings(_env_file=None)
    auc = by_name["CallscoreOnlineAucLow"]["expr"]
    psi = by_name["CallscoreScoreDrift"]["expr"]
    assert float(auc.rsplit("<", 1)[1]) == defaults.retrain_auc_floor
    assert float(psi.rsplit(">", 1)[1]) == defaults.retrain_psi_threshold


# --- the image ----------------------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_pinned_and_data_free():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-bookworm$", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert "HEALTHCHECK" in dockerfile and "/healthz" in (DEPLOY / "healthcheck.py").read_text()
    assert "pip install --constraint constraints.txt ." in dockerfile
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "**", "the build context is an allowlist"
    for private in ("out", "data", ".venv", "bench", "secrets", "artifacts", "tests"):
        assert not any(p.startswith(f"!{private}") for p in ignore), private


def test_constraints_pin_the_pyproject_versions():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    for raw in pyproject["project"]["dependencies"]:
        req = Requirement(raw)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{raw}: pin it exactly"
        assert pins.get(canonicalize_name(req.name)) == spec.version, (
            f"{raw}: deploy/constraints.txt has {pins.get(canonicalize_name(req.name))}; "
            "run .venv/bin/python deploy/pin_runtime_deps.py"
        )


# --- the real validator ---------------------------------------------------------------------------


def docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is not installed; .ci/run installs it")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return binary


def test_docker_compose_config_accepts_the_file():
    binary = docker_compose()
    files = ["-f", str(COMPOSE_FILE)]
    for layout in (files, [*files, "-f", str(CLUSTER_FILE)]):
        for profile in ([], ["--profile", "simulator"]):
            done = subprocess.run(
                [binary, *layout, *profile, "config", "-q"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr


def test_the_merge_is_composes(cluster_compose):
    """The tests' merge of the three-broker layout is what docker-compose itself makes of it."""
    layout = ["-f", str(COMPOSE_FILE), "-f", str(CLUSTER_FILE), "--profile", "simulator"]
    done = subprocess.run(
        [docker_compose(), *layout, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    composed = yaml.safe_load(done.stdout)["services"]
    ours = cluster_compose["services"]
    assert set(composed) == set(ours)
    for name, service in ours.items():
        theirs = composed[name]
        assert {k: str(v) for k, v in (theirs.get("environment") or {}).items()} == environment(
            service
        ), name
        assert set(theirs.get("depends_on", {})) == set(service.get("depends_on", {})), name
        assert theirs.get("image") == service.get("image"), name
