"""A demo run's setup: its output folder, its log, its broker and the settings of its children.

On a configured Kafka (CALLSCORE_BOOTSTRAP_SERVERS or .env) the run gets topics and a consumer
group of its own. Otherwise it starts a broker of its own, logging under `<out>/logs/` and stopped
with the run: Apache Kafka (`--broker kafka`, the default; core/local_broker needs Java), or
Tansu (`--broker tansu`, and the fallback when Apache Kafka cannot start, said in one line),
which slows down under minutes of live traffic, so on it the replay is shortened. The clients
take the broker's own timings (`LocalBroker.client_settings`). Keys, ports and folders are always
the run's own, so a demo never touches a deployment's models or state.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from callscore.demo.options import DemoOptions
from callscore.processes import CALLSCORE, Child, Children, settings_env
from core.local_broker import (
    BrokerKind,
    KafkaCluster,
    LocalBroker,
    LocalBrokerError,
    free_port,
    start_local_broker,
)
from core.settings import Settings, load_settings
from registry.keys import generate_keypair

# Folders and files the demo owns inside --out; only these are removed at the start of a run.
OWNED = ("logs", "keys", "faust", "artifacts", "data", "model-card", "quality")
OWNED_FILES = ("pids", "summary.json")
# On Tansu the replay holds at most this many prospects: the fetch cost of its partitions grows
# with their record batches, and past a couple of minutes of live traffic it slows everything
# down (docs/local-broker.md). Measured 2026-12-07 (2 cores shared with other jobs): 2,500
# (7,800 records, 1,760 retries) replay in about a minute (60-62 s) and reconcile; the default
# 5,000 did once too, in 87 s, at the edge of what Tansu carries.
TANSU_PROSPECTS = 2500


@dataclass
class Run:
    """What one run set up: settings, children, where things are."""

    options: DemoOptions
    out: Path
    settings: Settings
    children: Children
    brokers: list[Child]  # the processes of the broker the demo started (none: configured)
    broker_label: str
    broker_warning: str | None = None  # why the run is on Tansu although Kafka was asked for

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def env(self) -> dict[str, str]:
        """A child's environment: the demo's settings only (no other CALLSCORE_* variable)."""
        return settings_env(self.settings)

    def start(self, name: str, *args: str) -> Child:
        """`callscore <args>` as the child `name`, logged to logs/<name>.log."""
        return self.children.start(name, [CALLSCORE, *args], self.env, cwd=self.out)


def clean(out: Path) -> None:
    """Remove what an earlier run left in `out` (only the demo's own folders and files)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:
        shutil.rmtree(out / name, ignore_errors=True)
    for name in OWNED_FILES:
        (out / name).unlink(missing_ok=True)


def log_to_file(path: Path) -> None:
    """In-process library logs (Kafka clients, warnings) go to the demo's log, not the screen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)


def set_up(options: DemoOptions, out: Path, children: Children) -> Run:
    """The broker (configured, or started: Apache Kafka, else Tansu) and the settings every child
    of the run shares; on Tansu the options' replay is shortened, and the run's `broker_warning`
    says so in one line (with why, when Apache Kafka could not start)."""
    base = load_settings()
    run_id = uuid.uuid4().hex[:8]
    brokers: list[Child] = []
    warning = None
    if "bootstrap_servers" in base.model_fields_set:
        broker_label = f"Kafka at {base.bootstrap_servers} (topics demo-{run_id}.*)"
        updates = _own_topics(f"demo-{run_id}")
    else:
        local, why_not_kafka = _start_broker(options.broker, out)
        brokers = _adopt(local, out, children)
        started = f"at {local.bootstrap_servers} (started by the demo)"
        if local.kind == "kafka":
            broker_label = f"{local.origin.split(' (')[0]} {started}"
        else:
            options, shortened = _fit_to_tansu(options)
            broker_label = f"Tansu {started}"
            if why_not_kafka is not None:
                warning = f"{why_not_kafka}; the demo runs on Tansu instead" + (
                    f" and {shortened}" if shortened else ""
                )
            elif shortened:
                warning = f"--broker tansu: {shortened}"
        updates = local.client_settings()
    updates |= _own_state(out, run_id)
    settings = base.model_copy(update=updates)
    return Run(options, out, settings, children, brokers, broker_label, warning)


def _start_broker(kind: BrokerKind, out: Path) -> tuple[LocalBroker, str | None]:
    """The broker of `kind`, its logs under <out>/logs/; Tansu with the reason (one line) when
    Apache Kafka cannot start here (no Java, no Maven, the jars' fetch failed)."""
    logs = str(out / "logs")
    if kind == "tansu":
        return start_local_broker("tansu", log_dir=logs), None
    try:
        return start_local_broker("kafka", log_dir=logs), None
    except LocalBrokerError as error:
        return start_local_broker("tansu", log_dir=logs), str(error)


def _adopt(local: LocalBroker, out: Path, children: Children) -> list[Child]:
    """The broker's processes as the run's children "broker" ("broker-N" for a node N > 1), so
    that the end of the run and Ctrl-C stop them, after every other child."""
    if isinstance(local, KafkaCluster):
        logs = [node.log_path for node in local.nodes]
    else:
        logs = [out / "logs" / "broker.log"]
    return [
        children.adopt("broker" if n == 1 else f"broker-{n}", process, log)
        for n, (process, log) in enumerate(zip(local.processes, logs, strict=True), start=1)
    ]


def _fit_to_tansu(options: DemoOptions) -> tuple[DemoOptions, str]:
    """The options with a replay Tansu carries, and how it was shortened ("" if it was not: a
    replay of at most TANSU_PROSPECTS, or the months of --from, stays as asked)."""
    if options.start is not None or options.prospects <= TANSU_PROSPECTS:
        return options, ""
    shortened = replace(options, prospects=TANSU_PROSPECTS)
    return shortened, (
        f"the replay is shortened to {TANSU_PROSPECTS:,} prospects (Tansu slows down under "
        "minutes of live traffic)"
    )


def _own_topics(prefix: str) -> dict[str, Any]:
    """Someone's Kafka: topics of this run only, never the real ones."""
    return {
        "topic_prospects": f"{prefix}.prospects",
        "topic_tasks_prefix": f"{prefix}.call-tasks",
        "topic_dead_letters": f"{prefix}.prospects.dead-letters",
        "topic_models": f"{prefix}.models",
        "topic_outcomes": f"{prefix}.call-outcomes",
        "topic_outcome_dead_letters": f"{prefix}.call-outcomes.dead-letters",
        "topic_predictions": f"{prefix}.predictions",
        "topic_queue": f"{prefix}.call-queue",
        "topic_do_not_call": f"{prefix}.do-not-call",
        "topic_queue_inputs": f"{prefix}.call-queue.inputs",
        "topic_queue_state": f"{prefix}.call-queue.state",
    }


def _own_state(out: Path, run_id: str) -> dict[str, Any]:
    """The run's consumer group, folders (its lake too: the labelled history is the lake plus
    the topics' tail, and another run's lake must not count), signing keys and ports (scorer,
    monitor, API)."""
    _kid, private, public = generate_keypair(out / "keys")
    return {
        "streamer_app_id": f"callscore-demo-{run_id}",
        "streamer_data_dir": out / "faust",
        "artifact_dir": out / "artifacts",
        "export_url": str(out / "lake"),
        "model_signing_key_file": private,
        "model_trusted_keys": str(public),
        "pinned_model_version": None,
        "api_token": None,
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "monitor_http_port": free_port(),
        "api_port": free_port(),
    }
