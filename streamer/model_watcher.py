"""The model watcher: every replica reads the whole model topic itself and hot-swaps models.

Not a Faust agent on purpose: an agent's consumer group would split the model topic between
replicas, but every replica must see every manifest. Each watcher runs a TopicReader (unique
group id, manual assignment from the beginning, no commits) in a daemon thread.

Rules:
- every record goes through the project's one trust rule as it is read (registry/trust.py:
  signature, no artifact read; a sequence not above the newest trusted one is a replay): a
  refused record is logged and counted at once and never kept, so no number of invalid records
  can push a valid one out of the bounded list of candidates (a fresh replica always finds the
  newest valid record);
- the candidate is the signed record with the highest sequence (only records of
  Settings.pinned_model_version when pinned), so `callscore models promote` (a new record) takes
  effect and a replayed old record never does;
- a candidate is then fully verified (contract hash, scikit-learn version, bounded artifact read,
  sha256) before it is unpickled (registry.signing.verify_and_load); a refused one is logged and
  counted, and the next newest candidate wins, or the current model keeps serving;
- the swap is one reference assignment; the stream reads `current` once per batch, so each batch
  is scored by exactly one version and no event is lost or scored twice by a reload.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import UTC, datetime

from core.errors import CallscoreError
from core.settings import Settings
from core.topic_follower import TopicFollower
from core.topic_reader import Record
from registry.keys import trusted_keys
from registry.signing import ManifestRejected, verify_and_load
from registry.trust import ManifestRecord, ModelTrust, parse_record
from schemas import ModelManifest
from streamer.metrics import StreamMetrics
from streamer.scoring import ServedModel

log = logging.getLogger(__name__)

# Signed candidates kept while catching up, in increasing sequence: enough to fall back past a few
# signed-but-unloadable records (which only the key holder can write) without holding every
# (possibly inline, up to model_record_max_bytes) manifest of an uncompacted topic in memory.
MAX_PENDING = 16


class ModelWatcher(TopicFollower):
    def __init__(
        self,
        settings: Settings,
        metrics: StreamMetrics,
        poll_seconds: float = 0.25,
    ) -> None:
        super().__init__(
            settings,
            [settings.topic_models],
            "model watcher",
            "callscore-model-reader",
            poll_seconds,
        )
        self._metrics = metrics
        self._pending: deque[tuple[int, ModelManifest]] = deque(maxlen=MAX_PENDING)
        self._keys = trusted_keys(settings)
        self._trust = ModelTrust(self._keys, settings.model_name)
        self.current: ServedModel | None = None
        self.caught_up = threading.Event()
        self.records_read = 0

    def handle(self, records: list[Record], at_end: bool) -> None:
        self.step([parse_record(r) for r in records], at_end)

    # --- the decision logic (called by the thread; directly testable) ---
    def step(self, records: list[ManifestRecord], at_end: bool) -> None:
        for record in records:
            self._consider(record)
        if at_end and not self.caught_up.is_set():
            log.info("model watcher: read %d model records to the end", self.records_read)
            self.caught_up.set()
        if self.caught_up.is_set() and self._pending:
            self._apply_newest_valid()

    def _consider(self, record: ManifestRecord) -> None:
        self.records_read += 1
        verdict = self._trust.check(record)
        manifest = verdict.manifest
        if verdict.result == "ignored":
            return
        if manifest is None:
            log.warning("model record at offset %d refused: %s", record.offset, verdict.message)
            self._metrics.reloads.labels("rejected", verdict.reason).inc()
            return
        if not verdict.trusted:
            self._refuse(manifest, record.offset, verdict.reason, verdict.message)
            return
        pinned = self._settings.pinned_model_version
        if pinned is not None and manifest.version != pinned:
            return
        self._pending.append((record.offset, manifest))

    def _refuse(self, manifest: ModelManifest, offset: int, reason: str, message: str) -> None:
        current = self.current
        log.error(
            "model %s v%d (offset %d) refused: %s: %s; %s",
            manifest.model_name,
            manifest.version,
            offset,
            reason,
            message,
            f"still serving v{current.version}" if current else "no model loaded",
        )
        self._metrics.reloads.labels("rejected", reason).inc()

    def _apply_newest_valid(self) -> None:
        candidates = list(self._pending)  # increasing sequence
        self._pending.clear()
        for offset, manifest in reversed(candidates):
            current = self.current
            if current is not None and manifest.sequence <= current.manifest.sequence:
                return
            if (
                current is not None
                and current.version == manifest.version
                and current.manifest.artifact_sha256 == manifest.artifact_sha256
            ):
                log.info(
                    "model v%d re-announced at offset %d: already serving", manifest.version, offset
                )
                self._metrics.reloads.labels("unchanged", "").inc()
                return
            try:
                artifact = verify_and_load(manifest, self._settings, self._keys)
            except ManifestRejected as exc:
                self._refuse(manifest, offset, exc.reason, exc.message)
                continue
            except CallscoreError as exc:
                self._refuse(manifest, offset, "error", str(exc))
                continue
            self._swap(ServedModel(artifact, manifest, offset, datetime.now(UTC)))
            return

    def _swap(self, served: ServedModel) -> None:
        previous = self.current
        self.current = served  # one reference assignment: atomic for readers
        manifest = served.manifest
        self._metrics.reloads.labels("loaded", "").inc()
        self._metrics.model_version.set(manifest.version)
        self._metrics.model_info.info(
            {
                "model_name": manifest.model_name,
                "version": str(manifest.version),
                "artifact_sha256": manifest.artifact_sha256,
                "action": manifest.action,
            }
        )
        log.info(
            "serving model %s v%d (%s, record offset %d)%s",
            manifest.model_name,
            manifest.version,
            manifest.action,
            served.record_offset,
            f", was v{previous.version}" if previous else "",
        )
