"""The HTTP API, served by Faust's own web server (aiohttp) on Settings.http_port.

POST /score, GET /model need `Authorization: Bearer <Settings.api_token>` when a token is set.
Bodies are the models of schemas.api; docs/openapi.yaml is generated from them and describes
every route in ROUTES (tests keep the three in step).
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
from schemas.api import (
    ApiError,
    EventErrors,
    Health,
    Readiness,
    ScoreResult,
    ServedModelInfo,
    ValidationErrors,
)
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
    manifest = model.manifest.model_dump(include=set(ServedModelInfo.model_fields))
    info = ServedModelInfo(**manifest, loaded_at=model.loaded_at)
    return info.model_dump(mode="json")


def _error(message: str) -> dict[str, Any]:
    return ApiError(error=message).model_dump()


def score_request(body: bytes, model: ServedModel, settings: Settings) -> tuple[int, Any]:
    """(status, JSON document) for a /score body: one event object or a list of them."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return 422, ValidationErrors(error=f"body is not JSON: {exc}").model_dump()
    single = isinstance(parsed, dict)
    items = [parsed] if single else parsed
    if not isinstance(items, list) or not items:
        message = "body must be an event object or a non-empty list of events"
        return 422, ValidationErrors(error=message).model_dump()
    if len(items) > settings.batch_max_size:
        return 413, _error(
            f"{len(items)} events in one request; the maximum is "
            f"{settings.batch_max_size} (CALLSCORE_BATCH_MAX_SIZE)"
        )
    events, errors = [], []
    for index, item in enumerate(items):
        try:
            raw = json.dumps(item, allow_nan=True).encode()
            events.append(decode_prospect(raw, settings.max_message_bytes))
        except InvalidEvent as exc:
            errors.append(
                EventErrors(
                    index=index, kind=exc.kind, message=exc.message, field_errors=exc.field_errors
                )
            )
    if errors:
        message = f"{len(errors)} of {len(items)} events are invalid"
        return 422, ValidationErrors(error=message, errors=errors).model_dump()
    tasks = score_events(events, model, datetime.now(UTC))
    results = [ScoreResult.from_task(t).model_dump() for t in tasks]
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
            _error("missing or wrong bearer token"),
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="callscore"'},
        )

    def no_model(view: View) -> Response:
        return view.json(_error("no model loaded yet"), status=503)

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
            return self.json(Health().model_dump())

    @app.page("/readyz")
    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            checks = readiness()
            ready = all(checks.values())
            document = Readiness(ready=ready, **checks).model_dump()
            return self.json(document, status=200 if ready else 503)

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.render(), content_type=METRICS_CONTENT_TYPE)
