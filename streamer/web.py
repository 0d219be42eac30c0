"""The HTTP API, served by Faust's own web server (aiohttp) on Settings.http_port.

POST /score, GET /model need `Authorization: Bearer <Settings.api_token>` when a token is set.
docs/openapi.yaml describes every route in ROUTES (a test keeps the two in step).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust
from faust.web import Request, Response, View

from core.settings import Settings
from schemas import task_id_for
from schemas.decode import InvalidEvent, decode_prospect
from streamer.metrics import StreamMetrics
from streamer.scoring import ServedModel, score_events

# aiohttp refuses a charset inside content_type; Prometheus text is ASCII anyway.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"

ROUTES: dict[str, tuple[str, ...]] = {
    "/score": ("post",),
    "/model": ("get",),
    "/healthz": ("get",),
    "/readyz": ("get",),
    "/metrics": ("get",),
}


def authorized(settings: Settings, header: str | None) -> bool:
    if settings.api_token is None or not settings.api_token.get_secret_value():
        return True
    expected = f"Bearer {settings.api_token.get_secret_value()}".encode()
    return hmac.compare_digest(expected, (header or "").encode())


def model_document(model: ServedModel) -> dict[str, Any]:
    m = model.manifest
    return {
        "model_name": m.model_name,
        "version": m.version,
        "created_at": m.created_at.isoformat(),
        "published_at": m.published_at.isoformat(),
        "action": m.action,
        "artifact_sha256": m.artifact_sha256,
        "metrics": m.metrics,
        "tier_cut_points": m.tier_cut_points.model_dump(),
        "loaded_at": model.loaded_at.isoformat(),
    }


def score_request(body: bytes, model: ServedModel, settings: Settings) -> tuple[int, Any]:
    """(status, JSON document) for a /score body: one event object or a list of them."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return 422, {"error": f"body is not JSON: {exc}", "errors": []}
    single = isinstance(parsed, dict)
    items = [parsed] if single else parsed
    if not isinstance(items, list) or not items:
        return 422, {"error": "body must be an event object or a non-empty list of events"}
    if len(items) > settings.batch_max_size:
        return 413, {
            "error": f"{len(items)} events in one request; the maximum is "
            f"{settings.batch_max_size} (CALLSCORE_BATCH_MAX_SIZE)"
        }
    events, errors = [], []
    for index, item in enumerate(items):
        try:
            raw = json.dumps(item, allow_nan=True).encode()
            events.append(decode_prospect(raw, settings.max_message_bytes))
        except InvalidEvent as exc:
            errors.append(
                {
                    "index": index,
                    "kind": exc.kind,
                    "message": exc.message,
                    "field_errors": [e.model_dump() for e in exc.field_errors],
                }
            )
    if errors:
        return 422, {"error": f"{len(errors)} of {len(items)} events are invalid", "errors": errors}
    tasks = score_events(events, model, datetime.now(UTC))
    results = [
        {
            "event_id": t.event_id,
            "prospect_id": t.prospect_id,
            "task_id": task_id_for(t.event_id),
            "score": t.score,
            "priority": t.priority,
            "percentile": t.percentile,
            "model_version": t.model_version,
        }
        for t in tasks
    ]
    return 200, results[0] if single else results


def register_routes(
    app: faust.App,
    settings: Settings,
    metrics: StreamMetrics,
    current_model: Callable[[], ServedModel | None],
    readiness: Callable[[], dict[str, bool]],
) -> None:
    def unauthorized(view: View) -> Response:
        return view.json(
            {"error": "missing or wrong bearer token"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="callscore"'},
        )

    def no_model(view: View) -> Response:
        return view.json({"error": "no model loaded yet"}, status=503)

    @app.page("/score")
    class ScoreView(View):
        async def post(self, request: Request) -> Response:
            if not authorized(settings, request.headers.get("Authorization")):
                return unauthorized(self)
            model = current_model()
            if model is None:
                return no_model(self)
            status, document = score_request(await request.read(), model, settings)
            return self.json(document, status=status)

    @app.page("/model")
    class ModelView(View):
        async def get(self, request: Request) -> Response:
            if not authorized(settings, request.headers.get("Authorization")):
                return unauthorized(self)
            model = current_model()
            if model is None:
                return no_model(self)
            return self.json(model_document(model))

    @app.page("/healthz")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "alive"})

    @app.page("/readyz")
    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            checks = readiness()
            ready = all(checks.values())
            return self.json({"ready": ready, **checks}, status=200 if ready else 503)

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.render(), content_type=METRICS_CONTENT_TYPE)
