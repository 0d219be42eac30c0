"""A demo run's setup: its output folder, its log, its broker and the settings of its children.

On a configured Kafka (CALLSCORE_BOOTSTRAP_SERVERS or .env) the run gets topics and a consumer
group of its own; otherwise it starts the embedded Tansu. Keys, ports and folders are always the
run's own, so a demo never touches a deployment's models or state.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callscore.demo.options import DemoOptions
from callscore.processes import CALLSCORE, Child, Children, settings_env
from core.local_broker import BROKER_TIMINGS, free_port, start_tansu
from core.settings import Settings, load_settings
from registry.keys import generate_keypair

# Folders and files the demo owns inside --out; only these are removed at the start of a run.
OWNED = ("logs", "keys", "faust", "artifacts", "data", "model-card", "quality")
OWNED_FILES = ("pids", "summary.json")


@dataclass
class Run:
    """What one run set up: settings, children, where things are."""

    options: DemoOptions
    out: Path
    settings: Settings
    children: Children
    broker: Child | None
    broker_label: str

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
    """The broker (configured or embedded) and the settings every child of the run shares."""
    base = load_settings()
    run_id = uuid.uuid4().hex[:8]
    if "bootstrap_servers" in base.model_fields_set:
        broker = None
        broker_label = f"Kafka at {base.bootstrap_servers} (topics demo-{run_id}.*)"
        updates = _own_topics(f"demo-{run_id}")
    else:
        broker, bootstrap_servers = _embedded_broker(out, children)
        broker_label = f"embedded Tansu at {bootstrap_servers}"
        updates = {"bootstrap_servers": bootstrap_servers, **BROKER_TIMINGS["tansu"]}
    updates |= _own_state(out, run_id)
    return Run(options, out, base.model_copy(update=updates), children, broker, broker_label)


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


def _embedded_broker(out: Path, children: Children) -> tuple[Child, str]:
    log_path = out / "logs" / "broker.log"
    local = start_tansu(log_path=str(log_path))
    assert local.process is not None
    return children.adopt("broker", local.process, log_path), local.bootstrap_servers


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
