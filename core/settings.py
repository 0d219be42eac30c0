"""All configuration in one class. Environment variables use the prefix CALLSCORE_ (or a .env file).

Defaults suit a real Kafka cluster; tests and the local demo override the consumer-group timings
(see docs/local-broker.md: Tansu holds a JoinGroup for half the session timeout).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import CallscoreError
from schemas.decode import DEFAULT_MAX_EVENT_BYTES
from schemas.tasks import PRIORITIES, Priority

ENV_PREFIX = "CALLSCORE_"
# Room for a manifest's fields around its base64 artifact within one model-topic record.
MANIFEST_OVERHEAD_BYTES = 64 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    # --- Kafka connection, applied to every client (confluent-kafka and Faust/aiokafka) ---
    bootstrap_servers: str = Field(
        default="localhost:9092", description="Kafka bootstrap servers, comma-separated host:port."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How every client talks to Kafka (SASL_* needs the three sasl settings).",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism, with a SASL_* security protocol."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (a secret: never logged or printed)."
    )
    ssl_ca_file: Path | None = Field(
        default=None, description="CA certificate (PEM) that signed the brokers' certificates."
    )

    # --- Topics: the only place their names and partition counts are defined ---
    topic_prospects: str = Field(
        default="prospects", description="Prospect events in (ProspectEvent), keyed by prospect_id."
    )
    topic_tasks_prefix: str = Field(
        default="call-tasks",
        description="Tier topics are `<prefix>.high`, `<prefix>.medium`, `<prefix>.low`.",
    )
    topic_dead_letters: str = Field(
        default="prospects.dead-letters",
        description="Prospect events that could not be scored (DeadLetter: bytes and reason).",
    )
    topic_models: str = Field(
        default="models",
        description="Signed model manifests; one partition, compacted, keyed by model name and "
        "version.",
    )
    topic_outcomes: str = Field(
        default="call-outcomes", description="What dialers report after a call (CallOutcome)."
    )
    topic_outcome_dead_letters: str = Field(
        default="call-outcomes.dead-letters", description="Invalid call outcomes (DeadLetter)."
    )
    topic_predictions: str = Field(
        default="predictions",
        description="The prediction log: what each model saw and said, keyed by event_id.",
    )
    topic_queue: str = Field(
        default="call-queue",
        description="The live call queue: compacted, keyed by prospect_id; the newest record is "
        "the prospect's open CallTask, or a tombstone (reason in the `withdrawn` header).",
    )
    topic_do_not_call: str = Field(
        default="do-not-call",
        description="Do-not-call list: compacted, keyed by prospect_id (DoNotCallEntry); a "
        "tombstone lifts an entry.",
    )
    topic_queue_inputs: str = Field(
        default="call-queue.inputs",
        description="Internal: scored events, outcomes and do-not-call entries re-keyed to the "
        "partition of their prospect's queue state, whatever partitioner their producer used.",
    )
    topic_queue_state: str = Field(
        default="call-queue.state",
        description="Internal: compacted changelog of each prospect's queue state, read back "
        "when a scorer takes over a partition.",
    )
    partitions: int = Field(
        default=4,
        ge=1,
        description="Partitions of every keyed topic `callscore topics` creates: the most scorer "
        "replicas that share the work.",
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replicas of each topic `callscore topics` creates (3 on a cluster); it "
        "refuses to create topics when fewer brokers answer.",
    )
    min_insync_replicas: int = Field(
        default=1,
        ge=1,
        description="The topics' min.insync.replicas: replicas that must hold a record before "
        "an acks=all write succeeds (2 with a replication factor of 3: writes go on with one "
        "broker down, and an acknowledged record survives its loss).",
    )
    tombstone_retention_days: float = Field(
        default=7.0,
        ge=1.0,
        description="How long the compacted topics keep a tombstone (delete.retention.ms): "
        "longer than a reader may take to catch up, e.g. a dialer mirroring the call queue that "
        "is down over a long weekend, or it misses withdrawals.",
    )

    # --- Consumer-group timing (the local brokers' fast values: core/local_broker/common.py) ---
    session_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Consumer-group session timeout (the tests and the demo: 6 on Apache Kafka, "
        "which refuses less, 3 on Tansu).",
    )
    heartbeat_interval_seconds: float = Field(
        default=3.0,
        gt=0,
        description="Consumer-group heartbeat (the tests and the demo: 0.5).",
    )
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Consumer fetch wait; overrides Faust's hard-coded 1500 ms.",
    )

    # --- Scoring ---
    batch_max_size: int = Field(default=500, ge=1, description="Most events in one scoring batch.")
    batch_max_wait_seconds: float = Field(
        default=0.05, gt=0, description="Longest wait to fill a scoring batch."
    )
    max_message_bytes: int = Field(
        default=DEFAULT_MAX_EVENT_BYTES,
        ge=1024,
        description="Larger prospect events and outcomes are dead-lettered (too_large).",
    )
    queue_enabled: bool = Field(
        default=True,
        description="Scored events go through the live call queue (call-queue.inputs, then one "
        "open task per prospect); false: every scored event straight to its tier topic, as "
        "before the queue existed (the bench compares both).",
    )
    task_ttl_days: float = Field(
        default=14.0,
        gt=0,
        description="A task is withdrawn (expired) this long after its event, in event time.",
    )
    recontact_after_days: float = Field(
        default=30.0,
        ge=0,
        description="After a call that reached a prospect, newer events queue nothing for this "
        "long (event time).",
    )
    # Bounds the queue's memory: without it every prospect ever seen keeps an entry (about
    # 1.9 KB each, bench/README.md "Soak"). Not below task_ttl_days, so an event it makes late
    # would have got a task that had expired already.
    queue_forget_after_days: float = Field(
        default=30.0,
        gt=0,
        description="The call queue forgets a prospect without an open task or an objection this "
        "long after its newest event and its cooling-down (event time); events older than the "
        "stream time minus this are late. At least task_ttl_days.",
    )
    # A call without a decision (no answer, busy, voicemail, a callback) brings the prospect back
    # as a new event with campaign + 1, rescored by the serving model (docs/architecture.md).
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Calls per prospect in a campaign (its `campaign` count): a call without a "
        "decision at this attempt closes the task instead of retrying it.",
    )
    retry_min_score: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="A retry whose new score is below this is not queued (a callback is, "
        "whatever its score).",
    )
    retry_after_no_answer_hours: float = Field(
        default=4.0, ge=0, description="Delay before a retry after an unanswered call."
    )
    retry_after_busy_hours: float = Field(
        default=0.5, ge=0, description="Delay before a retry after a busy line."
    )
    retry_after_voicemail_hours: float = Field(
        default=24.0, ge=0, description="Delay before a retry after a voicemail."
    )
    dedupe_window: int = Field(
        default=100_000,
        ge=0,
        description="Recent event_ids a replica remembers to drop duplicates (0: off).",
    )
    model_name: str = Field(
        default="term-deposit", description="The model the scorers serve (key on the model topic)."
    )
    streamer_app_id: str = Field(
        default="callscore-streamer", description="Faust app id = consumer group of the scorers."
    )
    streamer_data_dir: Path = Field(
        default=Path("streamer-data"), description="Faust's data folder of a scorer replica."
    )
    producer_linger_ms: int = Field(
        default=5, ge=0, le=1000, description="Producer linger of every client (batches sends)."
    )
    commit_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often the scorer commits acknowledged offsets."
    )
    broker_retry_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long the scorer retries a batch's sends while the broker is away "
        "before it gives up (crashes without committing the batch).",
    )
    broker_retry_max_backoff_seconds: float = Field(
        default=2.0, gt=0, description="Cap of the exponential backoff between those retries."
    )
    broker_check_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often the scorer asks the broker for metadata (/readyz broker_reachable; "
        "also that request's timeout).",
    )
    pinned_model_version: int | None = Field(
        default=None, ge=1, description="Serve this version instead of the newest (rollback)."
    )

    # --- Model artifacts ---
    model_signing_key_file: Path | None = Field(
        default=None,
        description="PEM file of the Ed25519 private key that signs model records (trainer and "
        "publisher only; `callscore keys generate` writes one).",
    )
    model_trusted_keys: str | None = Field(
        default=None,
        description="Ed25519 public keys a model record may be signed with: comma-separated PEM "
        "files or directories of *.pem files (scorers, monitor, report, trainer).",
    )
    artifact_dir: Path = Field(
        default=Path("artifacts"),
        description="Where the publisher writes artifacts too large to go inline (file:// URI).",
    )
    model_record_max_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=256 * 1024,
        description="Largest model-topic record: the topic's max.message.bytes and the producer's; "
        "also the most bytes a scorer reads from an artifact_uri.",
    )
    artifact_read_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A model artifact not read within this time is refused."
    )
    inline_artifact_max_bytes: int = Field(
        default=900_000,
        ge=0,
        description="Larger artifacts go to artifact_dir (a file:// URI) instead of inline; "
        "base64 of an inline artifact must fit model_record_max_bytes.",
    )
    tier_high_fraction: float = Field(
        default=0.10, gt=0, lt=1, description="Share of validation scores above the high cut point."
    )
    tier_medium_fraction: float = Field(
        default=0.20, gt=0, lt=1, description="Share of validation scores in the medium tier."
    )

    # --- Training ---
    data: Path | None = Field(default=None, description="Path to bank-full.csv(.gz).")
    data_cache_dir: Path = Field(
        default=Path.home() / ".cache" / "callqueue-scorer",
        description="Where `callscore data fetch` keeps the verified UCI download.",
    )
    champion_tolerance: float = Field(
        default=0.005,
        ge=0,
        description="Without rows both models can be scored on (the champion's recorded holdout "
        "AUC), a candidate is published unless its ROC-AUC is this far below it.",
    )
    gate_confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="On rows both models are scored on, a candidate is published unless this "
        "interval of its ROC-AUC difference to the champion's lies wholly below zero.",
    )
    gate_bootstrap_resamples: int = Field(
        default=1000,
        ge=100,
        le=100_000,
        description="Paired bootstrap draws behind the gate's interval.",
    )
    base_data_until: str | None = Field(
        default=None,
        pattern=r"^\d{4}-\d{2}$",
        description="Use only base-data rows of contact periods before this YYYY-MM (a replay "
        "of the same file from that month on supplies the rest as outcomes).",
    )
    training_window_months: int | None = Field(
        default=None,
        ge=3,
        description="A training learns from its last this many contact months only, base data "
        "and outcomes alike (unset: every month; `callscore backtest --windows` compares).",
    )

    # --- Feedback loop: retraining triggers (event time: the outcomes' own timestamps) ---
    retrain_interval_seconds: float = Field(
        default=14 * 86_400,
        gt=0,
        description="Retrain when the newest outcome is this much newer than the training data.",
    )
    retrain_min_new_outcomes: int = Field(
        default=5_000, ge=1, description="Retrain after this many new valid matched outcomes."
    )
    retrain_psi_threshold: float = Field(
        default=0.25, gt=0, description="Retrain when the score PSI exceeds this."
    )
    retrain_auc_floor: float = Field(
        default=0.6, ge=0, le=1, description="Retrain when online ROC-AUC falls below this."
    )
    schedule_check_seconds: float = Field(
        default=60.0, gt=0, description="Wall-clock pause between two scheduler decisions."
    )
    quality_min_outcomes: int = Field(
        default=300,
        ge=10,
        description="Labelled outcomes a model version needs before its online AUC or PSI counts.",
    )
    recalibration_window: int = Field(
        default=2_000, ge=50, description="Latest labelled outcomes a recalibration fits on."
    )
    recalibration_min_outcomes: int = Field(
        default=500,
        ge=50,
        description="New labelled outcomes of the served version needed "
        "before the scheduler recalibrates it.",
    )
    recalibration_min_z: float = Field(
        default=2.0,
        ge=0,
        description="The scheduler recalibrates only when the served scores' expected "
        "conversions on the recalibration window differ from the observed ones by more than "
        "this many standard errors (0: whenever enough outcomes are fresh).",
    )

    # --- Feedback loop: the monitor's join window (memory: see docs/feedback-loop.md) ---
    monitor_window_max_predictions: int = Field(
        default=200_000, ge=100, description="Predictions kept for joining outcomes."
    )
    monitor_window_max_age_days: float = Field(
        default=60.0, gt=0, description="Predictions older than this (event time) are dropped."
    )
    monitor_quality_window: int = Field(
        default=5_000,
        ge=50,
        description="Latest labelled outcomes per model version behind the online metrics.",
    )
    monitor_http_port: int = Field(
        default=6067, ge=1, le=65535, description="Port of `callscore monitor`'s /metrics."
    )

    # --- Nightly export ---
    export_url: str = Field(
        default="out/lake",
        description="Where `callscore export` writes (a path or an fsspec URL); not `lake`, "
        "which is the package's folder in a checkout.",
    )
    export_time: str = Field(
        default="02:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="When the scheduled export runs: local HH:MM.",
    )
    export_timezone: str = Field(
        default="UTC", description="Zoneinfo zone of export_time and of an exported day."
    )
    export_read_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest read of a day from the exported topics (from each partition's "
        "first record of the day to its first record stamped export_max_lateness_seconds "
        "after the day, or its end).",
    )
    export_max_lateness_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="Records stamped within the day but written after records stamped this "
        "long after the day's end are not exported (producers' CreateTime is nearly in order); "
        "a wider value reads more.",
    )
    export_retries: int = Field(
        default=5, ge=0, description="Retries of a failed scheduled export, one a minute."
    )
    history_retention_days: float = Field(
        default=14.0,
        ge=2.0,
        description="Retention `callscore topics` gives the prediction log and the outcomes: "
        "the export's lag (a day) plus a margin for failed exports; the labelled history reads "
        "older records from the lake.",
    )
    dead_letter_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Retention `callscore topics` gives the dead-letter topics (time to inspect "
        "and replay what was refused).",
    )

    # --- HTTP API ---
    http_host: str = Field(
        default="0.0.0.0", description="Interface of every HTTP server (scorer, API, monitor)."
    )
    http_port: int = Field(
        default=6066,
        ge=1,
        le=65535,
        description="Port of the scorer's /healthz, /readyz and /metrics.",
    )
    claim_lease_seconds: float = Field(
        default=900.0,
        gt=0,
        description="How long a claim (POST /queue/claim) holds a prospect for its agent, at "
        "most: the call's outcome ends it sooner.",
    )
    claim_wait_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long POST /queue/claim waits for the queue to decide its proposals.",
    )
    api_port: int = Field(
        default=6068,
        ge=1,
        le=65535,
        description="Port of `callscore api`, the dialer-facing HTTP API in its own process.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token required by the API's /score, /model, /queue and /queue/claim "
        "when set (a secret).",
    )
    http_max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest /score request body (else 413)."
    )
    http_score_processes: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Processes scoring `callscore api`'s /score requests, off its event loop (one "
        "leaves the other cores to the stream; more only help with cores to spare).",
    )
    http_score_queue: int = Field(
        default=4,
        ge=1,
        description="Most /score requests in flight (running or waiting); more get 503.",
    )
    http_score_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Added to the /score processes' nice value, so that under heavy /score load "
        "the CPU goes to the stream first (0: same priority).",
    )
    http_retry_after_seconds: int = Field(
        default=1,
        ge=1,
        description="Retry-After of the API's 503s (/score's queue full, the call queue "
        "still being read, claims not proposable).",
    )
    http_max_error_entries: int = Field(
        default=20, ge=1, description="Most per-event errors in one 422 body (then truncated)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.heartbeat_interval_seconds >= self.session_timeout_seconds:
            raise ValueError("heartbeat_interval_seconds must be below session_timeout_seconds")
        inline_record = self.inline_artifact_max_bytes * 4 // 3 + MANIFEST_OVERHEAD_BYTES
        if inline_record > self.model_record_max_bytes:
            raise ValueError(
                f"inline_artifact_max_bytes {self.inline_artifact_max_bytes} does not fit "
                f"model_record_max_bytes {self.model_record_max_bytes} once base64-encoded "
                f"(needs {inline_record} bytes)"
            )
        try:
            ZoneInfo(self.export_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"export_timezone: unknown time zone {self.export_timezone!r}"
            ) from None
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas {self.min_insync_replicas} is above replication_factor "
                f"{self.replication_factor}: every acks=all write would be refused"
            )
        if self.queue_forget_after_days < self.task_ttl_days:
            raise ValueError(
                f"queue_forget_after_days {self.queue_forget_after_days:g} is below task_ttl_days "
                f"{self.task_ttl_days:g}: events young enough to be called would count as late"
            )
        if self.tier_high_fraction + self.tier_medium_fraction >= 1:
            raise ValueError("tier_high_fraction + tier_medium_fraction must be below 1")
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "security_protocol SASL_* needs sasl_mechanism, sasl_username and sasl_password"
            )
        return self

    def task_topic(self, priority: Priority) -> str:
        return f"{self.topic_tasks_prefix}.{priority}"

    @cached_property
    def task_topics(self) -> dict[Priority, str]:
        return {p: self.task_topic(p) for p in PRIORITIES}

    def as_env(self) -> dict[str, str]:
        """These settings as CALLSCORE_* variables, to configure a child process identically."""
        return env_vars(self.model_dump(exclude_none=True))


def env_vars(values: Mapping[str, Any]) -> dict[str, str]:
    """Settings field values as the CALLSCORE_* environment variables that set them."""
    env = {}
    for name, value in values.items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env


def load_settings() -> Settings:
    """Settings from the environment; a bad value is one line naming its variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        raise CallscoreError(
            f"invalid configuration: {ENV_PREFIX}{field.upper()}: {first['msg']}"
        ) from None
