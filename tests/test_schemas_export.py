"""The committed JSON Schema files are what `callscore schemas export` generates today."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from callscore.cli import main
from schemas import PRIORITIES, ErrorKind
from schemas.export import COMMITTED_DIR, render_schemas
from streamer.openapi import openapi_document, render_openapi
from streamer.web import ROUTES

OPENAPI = Path(__file__).parents[1] / "docs" / "openapi.yaml"


def test_committed_json_schemas_are_current():
    rendered = render_schemas()
    committed = {p.name: p.read_text() for p in COMMITTED_DIR.glob("*.schema.json")}
    stale = sorted(name for name in rendered if committed.get(name) != rendered[name])
    extra = sorted(set(committed) - set(rendered))
    assert not stale and not extra, (
        f"stale JSON Schemas {stale}, unexpected {extra}: "
        "run `callscore schemas export schemas/json` and commit the result"
    )


def test_prospect_schema_forbids_post_call_fields(tmp_path):
    assert main(["schemas", "export", str(tmp_path)]) == 0
    schema = json.loads((tmp_path / "prospect_event.schema.json").read_text())
    forbidden = {req for clause in schema["not"]["anyOf"] for req in clause["required"]}
    assert forbidden == {"duration", "y"}
    assert schema["properties"]["job"]["enum"][0] == "admin."


def test_committed_openapi_is_current_and_lists_every_route(tmp_path):
    assert OPENAPI.read_text() == render_openapi(), (
        "stale docs/openapi.yaml: run `callscore schemas openapi docs/openapi.yaml`"
    )
    document = yaml.safe_load(OPENAPI.read_text())
    assert document == openapi_document()
    served = {path: tuple(sorted(methods)) for path, methods in ROUTES.items()}
    assert {path: tuple(sorted(ops)) for path, ops in document["paths"].items()} == served
    assert main(["schemas", "openapi", str(tmp_path / "api.yaml")]) == 0
    assert (tmp_path / "api.yaml").read_text() == OPENAPI.read_text()


def test_openapi_schemas_come_from_the_contracts():
    components = openapi_document()["components"]["schemas"]
    error_kinds = components["EventErrors"]["properties"]["kind"]["enum"]
    assert error_kinds == list(ErrorKind.__args__)  # type: ignore[attr-defined]
    assert set(components["ProspectEvent"]["required"]) >= {"event_id", "prospect_id", "age"}
    assert components["ScoreResult"]["properties"]["priority"]["enum"] == list(PRIORITIES)
