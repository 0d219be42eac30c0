"""The HTTP routes: the dialer-facing API of `callscore api` (streamer/api.py, on
Settings.api_port) and the service routes every process serves (/healthz, /readyz, /metrics; the
scorer's on Faust's own web server at Settings.http_port).

POST /score, GET /model, GET /queue and POST /queue/claim need
`Authorization: Bearer <Settings.api_token>` when a token is set. GET /queue answers from the
process's mirror of the call-queue topic (streamer/queue_mirror.py says why a mirror): 503 until
it has read the topic to its end.
Bodies are the models of schemas.api; docs/openapi.yaml is generated from them and describes
every route in ROUTES, which the API serves; the scorer serves SERVICE_ROUTES and nothing else:
Faust's built-in pages are not mounted (`ApiOnlyWeb`). Tests compare the servers' routers,
these tables and the document.

No input may cost the stream its event loop or get a 5xx:
- /score parses, validates and scores in `ScorePool`'s processes, never on the API's event loop
  (nor holding its GIL); at most Settings.http_score_queue requests are in
  flight, more get 503 + Retry-After rather than a growing queue;
- the body is refused before it is parsed when it is too large (413), not JSON by its content
  type (415), or nested deeper than MAX_JSON_DEPTH (422; `json.loads` would recurse);
- a 422 lists at most Settings.http_max_error_entries per-event errors (`truncated` says so);
- a malformed `Authorization` header (non-ASCII, empty, another scheme) is a 401.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import multiprocessing
import os
import pickle
import re
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any, ClassVar, cast

import faust
from aiohttp import web as aiohttp_web
from faust.web import Request, Response, View
from faust.web.drivers import aiohttp as faust_aiohttp
from pydantic import ValidationError

from callqueue.view import QueueView
from core.settings import Settings
from core.topic_writer import PublishError
from schemas import PRIORITIES, Priority, ProspectEvent
from schemas.api import (
    QUEUE_LIMIT_DEFAULT,
    QUEUE_LIMIT_MAX,
    ApiError,
    ClaimAnswer,
    ClaimRequest,
    EventErrors,
    Health,
    QueueTopAnswer,
    Readiness,
    ScoreResult,
    ServedModelInfo,
    ValidationErrors,
)
from schemas.decode import InvalidEvent, decode_prospect
from streamer.claims import ClaimDesk
from streamer.metrics import StreamMetrics
from streamer.scoring import ServedModel, score_events

log = logging.getLogger(__name__)

# aiohttp refuses a charset inside content_type; Prometheus text is ASCII anyway.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"
JSON_CONTENT_TYPE = "application/json"

SERVICE_ROUTES: dict[str, tuple[str, ...]] = {
    "/healthz": ("get",),
    "/readyz": ("get",),
    "/metrics": ("get",),
}
ROUTES: dict[str, tuple[str, ...]] = {
    "/score": ("post",),
    "/model": ("get",),
    "/queue": ("get",),
    "/queue/claim": ("post",),
    **SERVICE_ROUTES,
}

# A /score body is an event object or a list of them, and events are flat: depth 2 is all a
# valid body needs. A little more lets a nested value get its per-field message; far less than
# the recursion limit `json.loads` and `json.dumps` would hit.
MAX_JSON_DEPTH = 8

_LIMIT = re.compile(r"[0-9]{1,9}")
# How much of a refused parameter value an error message repeats.
ECHO_CHARS = 40


class ApiOnlyWeb(faust_aiohttp.Web):
    """Faust's aiohttp server without Faust's own pages (`/`, `/router/`, `/table/`, `/graph/`,
    `/stats/`, `/performance/`): they are unauthenticated, not part of the API, and one of them
    answered 500. faust-streaming 0.15.3 mounts them from these class attributes
    (faust/web/base.py, `Web._enabled_blueprints`)."""

    default_blueprints: ClassVar[list[tuple[str, Any]]] = []
    production_blueprints: ClassVar[list[tuple[str, Any]]] = []
    debug_blueprints: ClassVar[list[tuple[str, Any]]] = []
    optional_blueprints: ClassVar[list[tuple[str, Any]]] = []


# The scoring process's copy of the served model, keyed by (version, record offset): it is sent
# with every request (bytes pickled once per model by the worker) but unpickled once per model.
_PROCESS_MODEL: dict[tuple[int, int], ServedModel] = {}


def score_in_process(
    body: bytes, key: tuple[int, int], pickled_model: bytes, settings: Settings
) -> tuple[int, bytes]:
    """score_request in a scoring process: (status, the JSON body already serialised)."""
    model = _PROCESS_MODEL.get(key)
    if model is None:
        _PROCESS_MODEL.clear()
        # The worker pickled this itself, from a model it had verified before unpickling.
        model = pickle.loads(pickled_model)
        _PROCESS_MODEL[key] = model
    status, document = score_request(body, model, settings)
    return status, json_bytes(document)


def warm_up() -> None:
    """Run in a fresh scoring process: the imports a first model's unpickling needs."""
    import registry.artifact  # noqa: F401  (scikit-learn, numpy, pandas)


class ScorePool:
    """The processes /score runs in, and the bound on requests in flight.

    Processes, not threads: two threads parsing and validating 500-event bodies held the GIL
    long enough to raise the stream's p99 latency 2.6-fold (docs/streamer.md). The counter is
    only touched on the event loop, so it needs no lock.
    """

    def __init__(self, processes: int, queue: int, niceness: int = 0) -> None:
        self.capacity = queue
        self.in_flight = 0
        self._processes = processes
        self._niceness = niceness
        self._executor = self._new_executor()
        self._pickled: tuple[tuple[int, int], bytes] | None = None

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn: the worker has threads (Kafka clients, the model reader) a fork would copy
        # mid-operation.
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(
            self._processes, mp_context=context, initializer=os.nice, initargs=(self._niceness,)
        )

    def warm(self) -> None:
        """Start the processes now, each importing what scoring needs, in the background."""
        for _ in range(self._processes):
            self._executor.submit(warm_up)

    def try_acquire(self) -> bool:
        if self.in_flight >= self.capacity:
            return False
        self.in_flight += 1
        return True

    async def score(
        self, body: bytes, model: ServedModel, settings: Settings
    ) -> tuple[int, bytes] | None:
        """Score in a process; the caller must have acquired a slot. None if a process died
        (the pool is replaced) or the model could not reach it: the client may retry."""
        loop = asyncio.get_running_loop()
        key = (model.version, model.record_offset)
        try:
            if self._pickled is None or self._pickled[0] != key:
                self._pickled = (key, await loop.run_in_executor(None, pickle.dumps, model))
            pickled = self._pickled[1]
            return await loop.run_in_executor(
                self._executor, score_in_process, body, key, pickled, settings
            )
        except BrokenProcessPool:
            log.warning("a /score process died; starting new ones")
            self._executor = self._new_executor()
            return None
        except Exception:
            # Not the request's fault (its body is parsed in the process, which answers 4xx):
            # the model could not be handed to the process. Answered, never left hanging.
            log.exception("a /score request could not be scored")
            return None
        finally:
            self.in_flight -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def authorized(settings: Settings, header: str | None) -> bool:
    """True for `Bearer <token>` (or no header when no token is set).

    Anything else present in the header (another scheme, no credentials, non-ASCII) is refused
    even without a token: a client sending it has a configuration the operator should see.
    """
    token = "" if settings.api_token is None else settings.api_token.get_secret_value()
    if header is None:
        return not token
    scheme, _, credentials = header.strip().partition(" ")
    if not header.isascii() or scheme.lower() != "bearer" or not credentials.strip():
        return False
    return not token or hmac.compare_digest(token.encode(), credentials.strip().encode())


def model_document(model: ServedModel) -> dict[str, Any]:
    manifest = model.manifest.model_dump(include=set(ServedModelInfo.model_fields))
    info = ServedModelInfo(**manifest, loaded_at=model.loaded_at)
    return info.model_dump(mode="json")


def _error(message: str) -> dict[str, Any]:
    return ApiError(error=message).model_dump()


def _first_error(exc: ValidationError) -> str:
    """The first problem of a request body, naming its field: 'n: Input should be ...'."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(body: bytes) -> int:
    """How deeply the containers of a JSON text nest, without parsing (or recursing) it.

    Brackets inside strings are not counted; in a text that is not JSON the count may be off,
    which only decides which 422 message it gets.
    """
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(_DEPTH_STEP[b] for b in brackets), default=0)


def score_request(body: bytes, model: ServedModel, settings: Settings) -> tuple[int, Any]:
    """(status, JSON document) for a /score body: one event object or a list of them."""
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        message = f"body nests {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted"
        return 422, ValidationErrors(error=message).model_dump()
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
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
    events: list[ProspectEvent] = []
    errors: list[EventErrors] = []
    invalid = 0
    for index, item in enumerate(items):
        try:
            raw = json.dumps(item, allow_nan=True).encode()
            events.append(decode_prospect(raw, settings.max_message_bytes))
        except InvalidEvent as exc:
            invalid += 1
            if len(errors) < settings.http_max_error_entries:
                errors.append(
                    EventErrors(
                        index=index,
                        kind=exc.kind,
                        message=exc.message,
                        field_errors=exc.field_errors,
                    )
                )
    if invalid:
        message = f"{invalid} of {len(items)} events are invalid"
        if invalid > len(errors):
            message += f"; the first {len(errors)} are listed"
        document = ValidationErrors(
            error=message, errors=errors, invalid=invalid, truncated=invalid > len(errors)
        )
        return 422, document.model_dump()
    tasks = score_events(events, model, datetime.now(UTC))
    results = [ScoreResult.from_task(t).model_dump() for t in tasks]
    return 200, results[0] if single else results


class BadParameter(ValueError):
    """A query parameter the client must fix: a 400 naming it."""


def queue_query(query: Mapping[str, str]) -> tuple[Priority | None, int]:
    """(tier, limit) of a GET /queue query; an empty value is the same as none."""
    tier = query.get("tier") or None
    if tier is not None and tier not in PRIORITIES:
        raise BadParameter(
            f"tier must be one of {', '.join(PRIORITIES)} (or absent for all), "
            f"not {tier[:ECHO_CHARS]!r}"
        )
    raw = query.get("limit") or None
    limit = QUEUE_LIMIT_DEFAULT if raw is None else None
    if raw is not None and _LIMIT.fullmatch(raw):
        limit = int(raw)
    if limit is None or not 1 <= limit <= QUEUE_LIMIT_MAX:
        shown = raw if raw is None else raw[:ECHO_CHARS]
        raise BadParameter(f"limit must be an integer from 1 to {QUEUE_LIMIT_MAX}, not {shown!r}")
    return cast(Priority | None, tier), limit


def queue_document(view: QueueView, tier: Priority | None, limit: int) -> dict[str, Any]:
    top = view.top(limit, tier)
    answer = QueueTopAnswer(
        tier=tier,
        limit=limit,
        tasks=top.tasks,
        open_by_tier=top.open_by_tier,
        open_total=top.open_total,
        not_due=top.not_due,
        withdrawals=top.withdrawals,
    )
    return answer.model_dump(mode="json")


def json_bytes(document: Any) -> bytes:
    """ASCII JSON: a lone surrogate echoed from the input cannot fail to encode (a 500)."""
    return json.dumps(document).encode("ascii")


def json_response(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = aiohttp_web.Response(
        body=document if isinstance(document, bytes) else json_bytes(document),
        status=status,
        content_type=JSON_CONTENT_TYPE,
        headers=headers,
    )
    return cast(Response, response)


def is_json_content_type(header: str | None) -> bool:
    media = (header or "").partition(";")[0].strip().lower()
    return media == JSON_CONTENT_TYPE or (
        media.startswith("application/") and media.endswith("+json")
    )


def declared_length(header: str | None) -> int | None:
    """Content-Length, when the client sent a usable one (aiohttp refuses malformed ones)."""
    return int(header) if header is not None and header.strip().isdigit() else None


@dataclass(frozen=True)
class ServiceHandlers:
    """The routes every process serves (SERVICE_ROUTES) as plain aiohttp handlers (request in,
    response out), for an aiohttp application of their own (`api_application`) or a Faust
    worker's web server (`register_routes`)."""

    settings: Settings
    metrics: StreamMetrics
    readiness: Callable[[], dict[str, bool]]

    async def healthz(self, request: Any) -> Response:
        return json_response(Health().model_dump())

    async def readyz(self, request: Any) -> Response:
        checks = self.readiness()
        ready = all(checks.values())
        document = Readiness(ready=ready, **checks).model_dump(exclude_none=True)
        return json_response(document, status=200 if ready else 503)

    async def prometheus(self, request: Any) -> Response:
        response = aiohttp_web.Response(
            body=self.metrics.render(), content_type="text/plain", charset=None
        )
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return cast(Response, response)

    def routes(self) -> dict[str, Callable[[Any], Awaitable[Response]]]:
        """Each path of SERVICE_ROUTES and its handler."""
        return {"/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.prometheus}


@dataclass(frozen=True)
class ApiHandlers(ServiceHandlers):
    """The dialer-facing API (ROUTES): the service routes and /score, /model, /queue and
    /queue/claim. `queue_view` returns the process's mirror of the call queue, or None until it
    has read the topic to its end (/queue answers 503 until then)."""

    current_model: Callable[[], ServedModel | None]
    pool: ScorePool
    queue_view: Callable[[], QueueView | None]
    claims: ClaimDesk

    def unauthorized(self) -> Response:
        return json_response(
            _error("missing, malformed or wrong bearer token (Authorization: Bearer <token>)"),
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="callscore"'},
        )

    def no_model(self) -> Response:
        return json_response(_error("no model loaded yet"), status=503)

    def too_large(self, length: int | None) -> Response:
        size = "" if length is None else f" ({length} bytes)"
        return json_response(
            _error(
                f"request body too large{size}; the maximum is "
                f"{self.settings.http_max_body_bytes} bytes (CALLSCORE_HTTP_MAX_BODY_BYTES)"
            ),
            status=413,
        )

    def retry_later(self, message: str) -> Response:
        retry = {"Retry-After": str(self.settings.http_retry_after_seconds)}
        return json_response(_error(message), status=503, headers=retry)

    async def json_body(self, request: Any) -> bytes | Response:
        """The body of an authorized JSON request, or the response refusing it (401, 415, 413)."""
        if not authorized(self.settings, request.headers.get("Authorization")):
            return self.unauthorized()
        content_type = request.headers.get("Content-Type")
        if not is_json_content_type(content_type):
            message = f"Content-Type must be {JSON_CONTENT_TYPE}, not {content_type!r}"
            return json_response(_error(message), status=415)
        length = declared_length(request.headers.get("Content-Length"))
        if length is not None and length > self.settings.http_max_body_bytes:
            return self.too_large(length)
        try:
            body: bytes = await request.read()
        except aiohttp_web.HTTPRequestEntityTooLarge:
            return self.too_large(None)
        return body

    async def score(self, request: Any) -> Response:
        settings, pool = self.settings, self.pool
        body = await self.json_body(request)
        if not isinstance(body, bytes):
            return body
        model = self.current_model()
        if model is None:
            return self.no_model()
        if not pool.try_acquire():
            return self.retry_later(
                f"{pool.capacity} /score requests already in flight "
                "(CALLSCORE_HTTP_SCORE_QUEUE); retry later"
            )
        answer = await pool.score(body, model, settings)
        if answer is None:
            return self.retry_later(
                "scoring is unavailable for a moment (see the worker's log); retry"
            )
        status, document = answer
        return json_response(document, status=status)

    async def model(self, request: Any) -> Response:
        if not authorized(self.settings, request.headers.get("Authorization")):
            return self.unauthorized()
        model = self.current_model()
        if model is None:
            return self.no_model()
        return json_response(model_document(model))

    async def queue(self, request: Any) -> Response:
        if not authorized(self.settings, request.headers.get("Authorization")):
            return self.unauthorized()
        try:
            tier, limit = queue_query(request.query)
        except BadParameter as exc:
            return json_response(_error(str(exc)), status=400)
        view = self.queue_view()
        if view is None:
            return self.retry_later("the call queue is still being read; retry")
        # Ranking a large queue takes a while (0.4 s at 1,000,000 open tasks): off the loop.
        loop = asyncio.get_running_loop()
        document = await loop.run_in_executor(None, queue_document, view, tier, limit)
        return json_response(document)

    async def claim(self, request: Any) -> Response:
        body = await self.json_body(request)
        if not isinstance(body, bytes):
            return body
        try:
            asked = ClaimRequest.model_validate_json(body)
        except ValidationError as exc:
            return json_response(_error(f"invalid claim request: {_first_error(exc)}"), 422)
        try:
            result = await self.claims.claim_async(asked.agent, asked.n, asked.tier)
        except PublishError as exc:
            return self.retry_later(f"the claims could not be proposed: {exc}")
        if result is None:
            return self.retry_later("the call queue is still being read; retry")
        answer = ClaimAnswer(
            agent=asked.agent,
            lease_until=result.lease_until,
            tasks=result.granted,
            proposed=result.proposed,
            refused=result.refused,
            undecided=result.undecided,
        )
        return json_response(answer.model_dump(mode="json"))

    def routes(self) -> dict[str, Callable[[Any], Awaitable[Response]]]:
        """Each path of ROUTES and its handler."""
        return {
            "/score": self.score,
            "/model": self.model,
            "/queue": self.queue,
            "/queue/claim": self.claim,
            **super().routes(),
        }


def register_routes(app: faust.App, handlers: ServiceHandlers) -> None:
    """The routes on a Faust worker's web server (its aiohttp underneath: the handlers get the
    aiohttp request)."""
    for path, handler in handlers.routes().items():
        app.page(path)(_view(handler, ROUTES[path]))


def _view(handler: Callable[[Any], Awaitable[Response]], methods: tuple[str, ...]) -> type[View]:
    """A Faust View answering `methods` with `handler`."""

    async def call(self: View, request: Request) -> Response:
        return await handler(request)

    return type("RouteView", (View,), dict.fromkeys(methods, call))


def api_application(handlers: ServiceHandlers, settings: Settings) -> aiohttp_web.Application:
    """The routes as an aiohttp application of their own (`callscore api`)."""
    application = aiohttp_web.Application(client_max_size=settings.http_max_body_bytes)
    for path, handler in handlers.routes().items():
        for method in ROUTES[path]:
            application.router.add_route(method.upper(), path, handler)  # type: ignore[arg-type]
    return application
