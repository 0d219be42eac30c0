"""What every scenario shares: the one broker, the options, the payloads, the models, a fresh
set of topics (and consumer group) per scenario with the same Settings (the broker's own client
timings, `LocalBroker.client_settings()`, under `--set`), and an observer of the measured
consumers (a profiler, bench/tools/profile_scorer.py stream)."""

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
from bench.resources import CpuWindow
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
    """Sizes, durations and how long to wait for a drain; `quick()` is the short run, `tiny()`
    the CI smoke's (tests/test_bench_smoke.py: every scenario once, bounded; figures mean
    nothing at those sizes)."""

    backlog: int = 20_000  # events per throughput scenario
    rounds: int = 3  # of every throughput scenario, interleaved; the best is reported
    per_event_backlog: int = 1_000  # the one-event-per-predict_proba peer is ~100x slower
    rate: float = 500.0  # events/s of the latency scenarios
    warmup_seconds: float = 3.0
    latency_seconds: float = 20.0
    http_seconds: float = 8.0  # /score alone, per request size
    loaded_seconds: float = 12.0  # the stream at `rate` under /score load, per request size
    load_rounds: int = 2  # rounds of the latency's quiet and loaded phases (scenarios/latency.py)
    reload_rate: float = 300.0
    reload_seconds: float = 10.0
    # The longest wait for a backlog's outputs (the per-event peer on a busy machine is the
    # slowest); the latency and reload phases wait at most their own bound or this, the lower.
    drain_timeout_seconds: float = 600.0

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

    def tiny(self) -> Options:
        """Every code path once, at sizes where only the code is measured (a few hundred
        events, one round, the latency's phases a second or two): a scenario that hangs fails
        after `drain_timeout_seconds` instead of stalling the run."""
        return replace(
            self,
            backlog=300,
            rounds=1,
            per_event_backlog=40,
            rate=100.0,
            warmup_seconds=1.0,
            latency_seconds=2.0,
            http_seconds=1.0,
            loaded_seconds=1.5,
            load_rounds=1,
            reload_rate=100.0,
            reload_seconds=4.0,
            drain_timeout_seconds=60.0,
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
            name, self.workdir, **{**self.broker.client_settings(), **self.overrides, **extra}
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
    def broker_pids(self) -> list[int]:
        """The broker's processes (a cluster's nodes), whose CPU the throughput scenarios
        measure; none for a broker the bench did not start (then no broker CPU is reported)."""
        return [process.pid for process in self.broker.processes]

    def cpu_window(self, consumers: dict[str, int]) -> CpuWindow:
        """The CPU of `consumers` (each with its children) and of the broker's processes."""
        pids: dict[str, int | list[int]] = dict(consumers)
        if self.broker_pids:
            pids["broker"] = self.broker_pids
        return CpuWindow(pids)


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
