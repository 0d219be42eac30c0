"""The HTTP API under hostile input: a 4xx for anything, never a 5xx, and only the routes the
OpenAPI description lists (a real `callscore api` process, a real broker, loopback only)."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from typing import Any

import pytest
from pydantic import SecretStr

from core.kafka import ensure_topics
from core.settings import Settings
from streamer.app import build_app
from streamer.metrics import StreamMetrics
from streamer.openapi import openapi_document
from streamer.web import (
    MAX_JSON_DEPTH,
    ROUTES,
    SERVICE_ROUTES,
    ApiHandlers,
    api_application,
    authorized,
    json_depth,
    score_request,
)
from testkit.factories import valid_event
from testkit.harness import ApiWorker, publish_model, worker_settings

TOKEN = "s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def send(
    api: ApiWorker,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, Any] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One raw request: any bytes in the body and header values (http.client sends bytes as is)."""
    connection = http.client.HTTPConnection("127.0.0.1", api.settings.api_port, timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def started_api(kafka_settings: Settings, tmp_path: Any, workers: Any, **updates: Any) -> Any:
    """`callscore api` alone: /score needs a model, not a scorer."""
    settings = worker_settings(kafka_settings, tmp_path, api_token=TOKEN, **updates)
    ensure_topics(settings)
    publish_model(settings, version=1)
    api = workers(settings, "api", ApiWorker)
    api.wait_ready()
    return api


# --- without a broker ------------------------------------------------------------------------


def served_operations(router: Any) -> dict[str, set[str]]:
    """Path -> methods of an aiohttp router, without HEAD (Faust's twin of each route: GET's
    answer, 405 on a POST-only one)."""
    served: dict[str, set[str]] = {}
    for route in router.routes():
        assert route.resource is not None
        served.setdefault(route.resource.canonical, set()).add(route.method.lower())
    return {path: methods - {"head"} for path, methods in served.items()}


def test_served_routes_are_exactly_the_openapi_paths(settings):
    """`callscore api` serves ROUTES, which docs/openapi.yaml describes; the scorer's Faust web
    server serves SERVICE_ROUTES, and nothing of Faust's own."""
    # The router only needs the handlers' bound methods, not the parts they would use.
    handlers = ApiHandlers(settings, StreamMetrics(), dict, *(None,) * 4)  # type: ignore[arg-type]
    api = served_operations(api_application(handlers, settings).router)
    assert api == {path: set(methods) for path, methods in ROUTES.items()}
    document = openapi_document()["paths"]
    assert {path: set(operations) for path, operations in document.items()} == api
    scorer = build_app(settings.model_copy(update={"http_port": 1}))
    assert served_operations(scorer.app.web.web_app.router) == {
        path: set(methods) for path, methods in SERVICE_ROUTES.items()
    }


def test_json_depth_counts_containers_not_brackets_in_strings():
    assert json_depth(b"{}") == 1
    assert json_depth(b'[{"a": 1}, {"b": [2]}]') == 3
    assert json_depth(b'{"a": "[[[[{{{{", "b": "\\"[[["}') == 1
    assert json_depth(b"[" * 100_000) == 100_000
    assert json_depth(b'"plain"') == 0


@pytest.mark.parametrize(
    "header, token, expected",
    [
        (None, None, True),
        ("Bearer anything", None, True),
        ("Bearer s3cret", "s3cret", True),
        ("bearer s3cret", "s3cret", True),
        (None, "s3cret", False),
        ("", "s3cret", False),
        ("Bearer", "s3cret", False),
        ("Bearer ", None, False),
        ("Basic czNjcmV0", "s3cret", False),
        ("Bearer s3cre", "s3cret", False),
        ("Bearer s3crét", "s3cret", False),
        ("Bearer \udcc3\udca9", None, False),  # how aiohttp hands over undecodable bytes
    ],
)
def test_authorization_header_rules(settings, header, token, expected):
    secret = None if token is None else SecretStr(token)
    configured = settings.model_copy(update={"api_token": secret})
    assert authorized(configured, header) is expected


def test_error_bodies_are_capped(settings):
    capped = settings.model_copy(update={"http_max_error_entries": 3})
    body = json.dumps([valid_event(event_id=f"e{i}", age=7) for i in range(50)]).encode()
    status, document = score_request(body, None, capped)
    assert status == 422
    assert [e["index"] for e in document["errors"]] == [0, 1, 2]
    assert document["invalid"] == 50 and document["truncated"] is True
    assert "50 of 50 events are invalid" in document["error"]


def test_deep_json_is_refused_before_parsing(settings):
    for body in (b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000, b"[" * 10**6):
        status, document = score_request(body, None, settings)
        assert status == 422
        assert f"at most {MAX_JSON_DEPTH}" in document["error"]


# --- against `callscore api` ------------------------------------------------------------------


def test_hostile_requests_get_4xx_never_5xx(kafka_settings, tmp_path, workers):
    api = started_api(kafka_settings, tmp_path, workers, http_max_body_bytes=64 * 1024)
    event = json.dumps(valid_event()).encode()
    cases: dict[str, tuple[str, str, bytes | None, dict[str, Any], int]] = {
        "deep JSON (1,000 levels)": ("POST", "/score", b"[" * 1000 + b"]" * 1000, BEARER, 422),
        "deep JSON, unterminated": ("POST", "/score", b"{" * 50_000, BEARER, 422),
        "not JSON": ("POST", "/score", b"{nope", BEARER, 422),
        "not UTF-8": ("POST", "/score", b"\xff\xfe{}", BEARER, 422),
        "lone surrogate in a field": (
            "POST",
            "/score",
            json.dumps(valid_event(job="\ud800")).encode(),
            BEARER,
            422,
        ),
        "non-ASCII Authorization": (
            "POST",
            "/score",
            event,
            {**BEARER, "Authorization": "Bearer s3crét".encode()},
            401,
        ),
        "Authorization not UTF-8": (
            "POST",
            "/score",
            event,
            {**BEARER, "Authorization": b"Bearer \xe9\xff"},
            401,
        ),
        "non-ASCII Authorization on /model": (
            "GET",
            "/model",
            None,
            {"Authorization": "Bearer \u00e9\u00e9".encode()},
            401,
        ),
        "Basic scheme": ("POST", "/score", event, {**BEARER, "Authorization": "Basic eDp5"}, 401),
        "empty Authorization": ("POST", "/score", event, {**BEARER, "Authorization": ""}, 401),
        "no token": ("GET", "/model", None, {}, 401),
        "text/plain body": ("POST", "/score", event, {**BEARER, "Content-Type": "text/plain"}, 415),
        "no Content-Type": (
            "POST",
            "/score",
            event,
            {"Authorization": BEARER["Authorization"]},
            415,
        ),
        "form body": (
            "POST",
            "/score",
            b"a=1",
            {**BEARER, "Content-Type": "application/x-www-form-urlencoded"},
            415,
        ),
        "body over the limit": ("POST", "/score", b" " * (65 * 1024), BEARER, 413),
        "GET /score": ("GET", "/score", None, BEARER, 405),
        "HEAD /score": ("HEAD", "/score", None, BEARER, 405),
        "DELETE /model": ("DELETE", "/model", None, BEARER, 405),
        "POST /healthz": ("POST", "/healthz", b"{}", BEARER, 405),
        "unknown path": ("GET", "/nope", None, BEARER, 404),
        "valid event": ("POST", "/score", event, BEARER, 200),
        "JSON with a charset": (
            "POST",
            "/score",
            event,
            {**BEARER, "Content-Type": "application/json; charset=utf-8"},
            200,
        ),
    }
    statuses = {
        name: send(api, method, path, body, headers)[0]
        for name, (method, path, body, headers, _) in cases.items()
    }
    print("\n".join(f"{name}: {status}" for name, status in statuses.items()))
    assert statuses == {name: case[-1] for name, case in cases.items()}
    _, _, body = send(api, "POST", "/score", *cases["deep JSON (1,000 levels)"][2:4])
    assert "nests 1000 levels deep" in json.loads(body)["error"]
    assert api.http("GET", "/healthz").status == 200, "the API survived every request"


def test_full_score_queue_answers_503_with_retry_after(kafka_settings, tmp_path, workers):
    api = started_api(kafka_settings, tmp_path, workers, http_score_processes=1, http_score_queue=1)
    body = json.dumps([valid_event(event_id=f"q{i}") for i in range(500)]).encode()
    clients, barrier = 12, threading.Barrier(12)
    answers: list[tuple[int, dict[str, str]]] = []

    def client() -> None:
        barrier.wait()
        for _ in range(3):
            status, headers, _ = send(api, "POST", "/score", body, BEARER)
            answers.append((status, headers))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    counts = Counter(status for status, _ in answers)
    print(f"/score with a queue of one, {clients} clients: {dict(counts)}")
    assert len(answers) == clients * 3
    assert set(counts) == {200, 503}, counts
    assert all(h.get("Retry-After") == "1" for status, h in answers if status == 503)
