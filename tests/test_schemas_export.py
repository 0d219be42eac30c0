"""The committed JSON Schema files are what `callscore schemas export` generates today."""

from __future__ import annotations

import json

from callscore.cli import main
from schemas.export import COMMITTED_DIR, render_schemas


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
