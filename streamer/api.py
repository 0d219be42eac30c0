"""`callscore api`: the dialer-facing HTTP API in a process of its own.

/score, /model, /queue and /queue/claim, with /healthz, /readyz and /metrics (streamer/web.py,
`ApiHandlers`), on a plain aiohttp server at Settings.api_port, with what they need and nothing
of the stream: the model watcher (the same
signature checks as the scorer: registry/trust.py), the mirror of the call queue, the /score
processes and the broker check. A /score load then costs the stream's replicas nothing but CPU
(bench/README.md, "Latency"); any number of API processes can run, each reads every partition
of the model and queue topics and none joins a consumer group.
"""

from __future__ import annotations

import logging

from aiohttp import web as aiohttp_web

from core.kafka_logs import (
    SERVICE_BURST,
    SERVICE_LINES_PER_SECOND,
    RateLimitFilter,
    limit_kafka_logs,
)
from core.settings import Settings
from streamer.broker_check import BrokerCheck
from streamer.claims import ClaimDesk
from streamer.metrics import StreamMetrics
from streamer.model_watcher import ModelWatcher
from streamer.queue_mirror import QueueMirror
from streamer.web import ApiHandlers, ScorePool, api_application

log = logging.getLogger(__name__)
ACCESS_LOG = logging.getLogger("aiohttp.access")


def run_api(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then stop every thread and process it started."""
    limit_kafka_logs(RateLimitFilter(SERVICE_LINES_PER_SECOND, SERVICE_BURST))
    metrics = StreamMetrics()
    watcher = ModelWatcher(settings, metrics)
    mirror = QueueMirror(settings)
    broker = BrokerCheck(settings, metrics)
    pool = ScorePool(
        settings.http_score_processes, settings.http_score_queue, settings.http_score_niceness
    )

    def readiness() -> dict[str, bool]:
        return {
            "model_loaded": watcher.current is not None,
            "queue_mirrored": mirror.view() is not None,
            "broker_reachable": broker.reachable,
        }

    handlers = ApiHandlers(
        settings,
        metrics,
        readiness,
        lambda: watcher.current,
        pool,
        mirror.view,
        ClaimDesk(settings, mirror.view),
    )
    for part in (watcher, mirror, broker):
        part.start()
    pool.warm()
    try:
        aiohttp_web.run_app(
            api_application(handlers, settings),
            host=settings.http_host,
            port=settings.api_port,
            print=lambda line: log.info("%s", line),
            # One line per request (aiohttp's access log) only at debug level: at a dialer's
            # rate it would be most of the log (4,676 of 4,681 lines in a 3-minute bench run).
            access_log=ACCESS_LOG if log.isEnabledFor(logging.DEBUG) else None,
        )
    finally:
        pool.shutdown()
        for part in (watcher, mirror, broker):
            part.stop()
