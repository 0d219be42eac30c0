"""The suite's result, typed: what each scenario measured, the run around them, and where the
JSON goes (bench/results/<name>.json, per machine, not committed).

The JSON layout is the one `python -m bench compare` reads: a scenario's figures flat in its
object under "scenarios", the latency phases under their names ("steady", "loaded-1", ...).
Unknown keys are ignored on reading, so a file written by a later bench still compares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

RESULTS = Path(__file__).parent / "results"


class Figures(BaseModel):
    # Python names in code, the JSON's names ("loaded-1") in files.
    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


class Round(Figures):
    """One round of a throughput scenario, kept beside the best one."""

    events_per_s: int | None = None
    cpu_seconds_per_10k: dict[str, float | None] | None = None
    lost: int | None = None
    repeated: int | None = None
    error: str | None = None


class ScenarioResult(Figures):
    """What the suite adds to every scenario's own figures."""

    seconds: float = 0.0
    load_average_after: list[float] = []
    rounds: list[Round] | None = None  # throughput scenarios: every round, the best reported


class Failed(ScenarioResult):
    error: str


class Backlog(ScenarioResult):
    """A consumer draining a backlog (scenarios.backlog.drain): rate, exactly-once, CPU, RSS."""

    events: int
    outputs: int
    lost: int
    repeated: int
    span_seconds: float
    events_per_s: int | None  # None when the outputs span no time
    cpu_seconds_per_10k: dict[str, float | None] = {}  # per process: "broker", "worker-0", ...
    peak_rss_mb: list[float | None] = []
    # Only the consumers that report them: the model, and the batches (the scorers' metrics, the
    # confluent-kafka loop's own count).
    model: str | None = None
    workers: int | None = None
    queue_enabled: bool | None = None  # the scorers: through the call queue (Settings)
    batch_max_size: int | None = None
    consumed_per_worker: list[int] | None = None
    mean_batch_size: float | None = None
    scoring_ms_per_batch: float | None = None
    scoring_share_of_span: float | None = None

    @property
    def consumer_cpu(self) -> float | None:
        """CPU seconds per 10k events of the consumer process(es), the broker left out."""
        values = [v for k, v in self.cpu_seconds_per_10k.items() if k != "broker" and v is not None]
        return round(sum(values), 3) if values else None


class PhaseLatency(Figures):
    """Latency percentiles of one phase (none when no event came out)."""

    events: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    lost: int | None = None
    producer_worst_lag_ms: float | None = None  # how late the bench's own producer was


class HttpLoad(Figures):
    """`POST /score` under one load (scenarios.http_load, its own process)."""

    events_per_request: int
    concurrency: int
    seconds: float
    warmup_seconds: float
    warmup_status: int
    requests: int
    statuses: dict[str, int]
    requests_per_s: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


class Latency(ScenarioResult):
    rate_events_per_s: float
    warmup: PhaseLatency | None = None
    steady: PhaseLatency
    # Results from before `callscore api` (the scorer's own /score under load); read, not made.
    loaded_1: PhaseLatency | None = Field(default=None, alias="loaded-1")
    loaded_100: PhaseLatency | None = Field(default=None, alias="loaded-100")
    # The rounds (scenarios/latency.py): quiet phases pooled, and the API's /score under load.
    quiet: PhaseLatency | None = None
    api_loaded_1: PhaseLatency | None = Field(default=None, alias="api-loaded-1")
    api_loaded_100: PhaseLatency | None = Field(default=None, alias="api-loaded-100")
    round_phases: dict[str, PhaseLatency] = {}  # each phase of the rounds, in running order
    http_alone: dict[str, HttpLoad] = {}  # by events per request
    http_under_stream: dict[str, HttpLoad] = {}  # the scorer's own /score (older results)
    http_api_under_stream: dict[str, HttpLoad] = {}
    peak_rss_mb: list[float | None] = []  # the scorer, then its children
    score_process_peak_rss_mb: list[float | None] = []  # the API, then its /score processes

    def loaded(self) -> dict[int, PhaseLatency]:
        """The stream's latency under /score load on the scorer, by events per request (results
        from before `callscore api`)."""
        phases = {1: self.loaded_1, 100: self.loaded_100}
        return {size: phase for size, phase in phases.items() if phase is not None}

    def unloaded(self, api: bool) -> PhaseLatency:
        """What a loaded phase compares with: the quiet phases of the rounds when the API's
        loads ran in them, else the steady phase (older results)."""
        return self.quiet if api and self.quiet is not None else self.steady

    def api_loaded(self) -> dict[int, PhaseLatency]:
        """The stream's latency under /score load on `callscore api`, by events per request."""
        phases = {1: self.api_loaded_1, 100: self.api_loaded_100}
        return {size: phase for size, phase in phases.items() if phase is not None}


class Reload(ScenarioResult):
    rate_events_per_s: float
    events: int
    largest_gap_ms: int
    largest_gap_starts_ms_after_publish: int
    largest_gap_around_reload_ms: int
    largest_input_gap_ms: int
    publish_to_first_v2_task_ms: int | None
    lost: int
    scored_twice: int
    tasks_per_version: dict[str, int]
    models_loaded_metric: float
    serving_version_at_end: float
    latency: PhaseLatency
    peak_rss_mb: list[float | None] = []


# Read back by shape: each member has required fields the others lack.
Outcome = Backlog | Latency | Reload | Failed


class Machine(Figures):
    cpus: int
    cpu_model: str
    python: str
    platform: str
    packages: dict[str, str]
    product_commit: str
    product_dir: str  # where the product was imported from (a before/after run: an older copy)


class BrokerUsed(Figures):
    """The broker every scenario ran on: its kind ("kafka", "tansu") and what it is, e.g.
    "Apache Kafka 3.9.1 (1 node)" (core.local_broker's LocalBroker.origin)."""

    kind: str
    origin: str


class LoadAverage(Figures):
    start: list[float]
    end: list[float] | None = None


class Target(Figures):
    name: str
    value: str
    ratio: float | None
    met: bool | None  # None: not measured in this run


class SuiteResult(Figures):
    started_at: str
    machine: Machine
    load_average: LoadAverage
    # None in results from before the bench named it: those ran on Tansu.
    broker: BrokerUsed | None = None
    options: dict[str, float | int]  # context.Options
    overrides: dict[str, str]  # --set FIELD=VALUE
    data_source: str
    production_model: str
    workdir: str
    settings: dict[str, int | float | str]  # suite.SETTINGS_SHOWN
    scenarios: dict[str, Outcome] = {}
    duration_seconds: float = 0.0
    ratios: dict[str, float | None] = {}
    targets: list[Target] = []

    def backlog(self, name: str) -> Backlog | None:
        found = self.scenarios.get(name)
        return found if isinstance(found, Backlog) else None

    def latency(self) -> Latency | None:
        found = self.scenarios.get("latency")
        return found if isinstance(found, Latency) else None

    def reload(self) -> Reload | None:
        found = self.scenarios.get("reload")
        return found if isinstance(found, Reload) else None


def write_results(name: str, data: BaseModel | Sequence[Any] | Mapping[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    if isinstance(data, BaseModel):
        text = data.model_dump_json(indent=2)
    else:
        text = json.dumps(data, indent=2)
    path.write_text(text + "\n")
    return path


def read_suite(path: Path) -> SuiteResult:
    """A suite's results file; a file that is not one is refused in one line."""
    try:
        return SuiteResult.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise SystemExit(f"{path}: {exc.strerror}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise SystemExit(
            f"{path}: not a bench suite result ({exc.error_count()} problems; {where}: "
            f"{first['msg']})"
        ) from None
