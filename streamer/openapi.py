"""The OpenAPI description of `callscore api`, built from the routes and the contracts.

`callscore schemas openapi docs/openapi.yaml` writes it; a test keeps the committed file current,
so the document can never disagree with the pydantic models the handlers serialise.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas import PRIORITIES, ProspectEvent
from schemas.api import (
    QUEUE_LIMIT_DEFAULT,
    QUEUE_LIMIT_MAX,
    ApiError,
    ClaimAnswer,
    ClaimRequest,
    Health,
    QueueTopAnswer,
    Readiness,
    ScoreResult,
    ServedModelInfo,
    ValidationErrors,
)

JSON = "application/json"


class _Components:
    """Collects each model's JSON Schema once under #/components/schemas."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        # Requests are described as they are validated, responses as they are serialised.
        schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}",
            mode="validation" if model is ProspectEvent else "serialization",
        )
        self.schemas.update(schema.pop("$defs", {}))
        self.schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def one_or_list(self, model: type[BaseModel]) -> dict[str, Any]:
        ref = self.ref(model)
        return {"oneOf": [ref, {"type": "array", "minItems": 1, "items": ref}]}


def _body(description: str, schema: dict[str, Any], media: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def openapi_document(version: str = "0.1.0") -> dict[str, Any]:
    c = _Components()
    error = c.ref(ApiError)
    unauthorized = {"$ref": "#/components/responses/Unauthorized"}
    no_model = {"$ref": "#/components/responses/NoModel"}
    paths: dict[str, Any] = {
        "/score": {
            "post": {
                "summary": "Score one prospect event or a list of them with the served model.",
                "description": "The same validation as the stream (strict JSON types, no "
                "post-call fields). Nothing is published to Kafka. At most "
                "CALLSCORE_BATCH_MAX_SIZE events per request. Scored in separate processes "
                "(CALLSCORE_HTTP_SCORE_PROCESSES), never on the stream's event loop.",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": c.one_or_list(ProspectEvent)}},
                },
                "responses": {
                    "200": _body(
                        "One result for an object body, a list (same order) for a list body.",
                        c.one_or_list(ScoreResult),
                    ),
                    "401": unauthorized,
                    "413": _body(
                        "More events than CALLSCORE_BATCH_MAX_SIZE, or a body larger than "
                        "CALLSCORE_HTTP_MAX_BODY_BYTES.",
                        error,
                    ),
                    "415": _body("Content-Type is not application/json.", error),
                    "422": _body(
                        "Body not JSON, nested too deeply, or at least one event invalid; "
                        "nothing is scored. At most CALLSCORE_HTTP_MAX_ERROR_ENTRIES per-event "
                        "errors are listed.",
                        c.ref(ValidationErrors),
                    ),
                    "503": {
                        "description": "No verified model loaded yet, or "
                        "CALLSCORE_HTTP_SCORE_QUEUE requests already in flight (then with "
                        "Retry-After).",
                        "headers": {
                            "Retry-After": {
                                "description": "Seconds to wait (when the queue is full).",
                                "schema": {"type": "integer"},
                            }
                        },
                        "content": {JSON: {"schema": error}},
                    },
                },
            }
        },
        "/model": {
            "get": {
                "summary": "The model this replica serves.",
                "security": [{"bearer": []}],
                "responses": {
                    "200": _body("Current model.", c.ref(ServedModelInfo)),
                    "401": unauthorized,
                    "503": no_model,
                },
            }
        },
        "/queue": {
            "get": {
                "summary": "The best open call tasks of the whole deployment, by score.",
                "description": "Read from this process's mirror of the compacted call-queue "
                "topic (every partition): the newest record per prospect is its open task. "
                "Highest score first, equal scores by task_id; the counts cover the whole queue.",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "tier",
                        "in": "query",
                        "required": False,
                        "description": "Only this tier's tasks (absent or empty: every tier).",
                        "schema": {"type": "string", "enum": list(PRIORITIES)},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "At most this many tasks.",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": QUEUE_LIMIT_MAX,
                            "default": QUEUE_LIMIT_DEFAULT,
                        },
                    },
                ],
                "responses": {
                    "200": _body(
                        "The best open tasks and the queue's counts.", c.ref(QueueTopAnswer)
                    ),
                    "400": _body("tier or limit is not valid (the message names it).", error),
                    "401": unauthorized,
                    "503": {
                        "description": "The mirror has not read the call-queue topic to its end "
                        "yet (or this process does not mirror it); retry after Retry-After.",
                        "headers": {
                            "Retry-After": {
                                "description": "Seconds to wait.",
                                "schema": {"type": "integer"},
                            }
                        },
                        "content": {JSON: {"schema": error}},
                    },
                },
            }
        },
        "/queue/claim": {
            "post": {
                "summary": "Claim an agent's next calls: the best due tasks no one holds.",
                "description": "Each task is held for the agent until its outcome, or for "
                "CALLSCORE_CLAIM_LEASE_SECONDS at most; two agents never hold the same prospect, "
                "whichever API process they ask (the prospect's queue partition decides every "
                "claim). Claims survive a restart of the API; a task shows its claim on the "
                "call-queue topic (claim_id, claimed_by, lease_until).",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": c.ref(ClaimRequest)}},
                },
                "responses": {
                    "200": _body(
                        "The tasks now held for the agent (possibly fewer than asked, or none).",
                        c.ref(ClaimAnswer),
                    ),
                    "401": unauthorized,
                    "413": _body("A body larger than CALLSCORE_HTTP_MAX_BODY_BYTES.", error),
                    "415": _body("Content-Type is not application/json.", error),
                    "422": _body(
                        "The body is not a claim request (the message names the field).", error
                    ),
                    "503": {
                        "description": "The mirror has not read the call-queue topic to its end "
                        "yet, or Kafka did not take the claims; retry after Retry-After.",
                        "headers": {
                            "Retry-After": {
                                "description": "Seconds to wait.",
                                "schema": {"type": "integer"},
                            }
                        },
                        "content": {JSON: {"schema": error}},
                    },
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness; 200 while the process serves HTTP.",
                "responses": {"200": _body("Alive.", c.ref(Health))},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness; 200 when prospect partitions are assigned and a model is "
                "loaded.",
                "responses": {
                    "200": _body("Ready.", c.ref(Readiness)),
                    "503": _body(
                        "Not ready (no model yet, or no partitions assigned / rebalancing).",
                        c.ref(Readiness),
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format 0.0.4).",
                "responses": {"200": _body("Metrics.", {"type": "string"}, "text/plain")},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callqueue-scorer API",
            "version": version,
            "description": "The dialer-facing HTTP API (`callscore api`, on CALLSCORE_API_PORT); "
            "these are the only routes served. A scorer replica (`callscore stream`, on "
            "CALLSCORE_HTTP_PORT) serves /healthz, /readyz and /metrics of them. When "
            "CALLSCORE_API_TOKEN is set, /score, /model, /queue and /queue/claim need "
            "`Authorization: Bearer <token>`; a malformed Authorization header is refused (401) "
            "on them in any case.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Unauthorized": _body(
                    "Missing or wrong bearer token (when CALLSCORE_API_TOKEN is set), or a "
                    "malformed Authorization header.",
                    error,
                ),
                "NoModel": _body("No verified model loaded yet.", error),
            },
            "schemas": dict(sorted(c.schemas.items())),
        },
    }


def render_openapi() -> str:
    import yaml

    class PlainDumper(yaml.SafeDumper):
        """No &anchors/*aliases for repeated $refs: the file is read by people too."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(
        openapi_document(), Dumper=PlainDumper, sort_keys=False, width=100, allow_unicode=True
    )
