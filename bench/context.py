"""What every scenario shares: the one broker, the options, the payloads, the models, a fresh
set of topics (and consumer group) per scenario with the same Settings, and an observer of the
measured consumers (a profiler, bench/tools/profile_scorer.py stream)."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bench.payloads import Payloads
from bench.production_model import as_version
from core.kafka import ensure_topics
from core.local_broker import LocalBroker
from core.settings import Settings
from registry.artifact import ModelArtifact, dump_artifact
from registry.model_topic import publish_manifest
from registry.signing import build_manifest
from schemas import ModelManifest
from testkit.harness import StreamWorker, isolated_settings, worker_settings

# Given a scenario's name and its consumer processes' pids, what runs beside them while they
# drain (e.g. py-spy attached to them); the suite's default observes nothing.
Observer = Callable[[str, dict[str, int]], AbstractContextManager[None]]


def no_observer(_scenario: str, _pids: dict[str, int]) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Options:
    """Sizes and durations; `quick()` is the smoke-run variant."""

    backlog: int = 20_000  # events per throughput scenario
    rounds: int = 3  # of every throughput scenario, interleaved; the best is reported
    per_event_backlog: int = 1_000  # the one-event-per-predict_proba peer is ~100x slower
    rate: float = 500.0  # events/s of the latency scenarios
    warmup_seconds: float = 3.0
    latency_seconds: float = 20.0
    http_seconds: float = 8.0  # /score alone, per request size
    loaded_seconds: float = 12.0  # the stream at `rate` under /score load, per request size
    reload_rate: float = 300.0
    reload_seconds: float = 10.0

    def quick(self) -> Options:
        return replace(
            self,
            backlog=5_000,
            rounds=1,
            per_event_backlog=200,
            warmup_seconds=2.0,
            latency_seconds=6.0,
            http_seconds=3.0,
            loaded_seconds=5.0,
            reload_seconds=6.0,
        )

    def as_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Context:
    broker: LocalBroker
    workdir: Path
    options: Options
    overrides: dict[str, str]  # --set FIELD=VALUE, applied to every scenario
    payloads: Payloads
    production: ModelArtifact
    small: ModelArtifact
    data_source: str
    observe: Observer = no_observer
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _names: Iterator[int] = field(default_factory=itertools.count)

    def settings(self, scenario: str, **extra: Any) -> Settings:
        """Fresh topics (created) and keys for one scenario; --set, then `extra`, on top."""
        name = f"{scenario}-{self.run_id}-{next(self._names)}"
        settings = isolated_settings(
            name,
            self.workdir,
            bootstrap_servers=self.broker.bootstrap_servers,
            **{**self.overrides, **extra},
        )
        ensure_topics(settings)
        return settings

    def worker(
        self, settings: Settings, role: str, kind: type[StreamWorker] = StreamWorker
    ) -> StreamWorker:
        """`callscore stream` (or `kind`: `callscore api`) on these settings (its own HTTP
        port, data dir and log)."""
        name = instance_name(settings, role)
        configured = worker_settings(settings, self.workdir, name)
        return kind(configured, self.log_path(name))

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    @property
    def broker_pid(self) -> int:
        assert self.broker.process is not None, "the bench starts its own broker"
        return self.broker.process.pid


def instance_name(settings: Settings, role: str) -> str:
    """A name for files of one process (log, data dir, gate) unique across scenarios and rounds:
    the scenario's topics are (see Context.settings)."""
    return f"{settings.topic_prospects.removeprefix('prospects-')}-{role}"


def manifest_for(settings: Settings, artifact: ModelArtifact, version: int) -> ModelManifest:
    """A signed manifest of `artifact` as `version` (publish it with publish_manifest)."""
    announced = as_version(artifact, version, settings.model_name)
    return build_manifest(dump_artifact(announced), announced.metadata, settings)


def publish(settings: Settings, artifact: ModelArtifact, version: int = 1) -> ModelManifest:
    return publish_manifest(settings, manifest_for(settings, artifact, version))
