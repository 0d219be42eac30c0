"""JSON Schema files for producers and consumers in other languages (`callscore schemas export`)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.dead_letter import DeadLetter
from schemas.do_not_call import DoNotCallEntry
from schemas.manifest import ModelManifest
from schemas.outcome import CallOutcome
from schemas.prediction import PredictionRecord
from schemas.prospect import ProspectEvent
from schemas.tasks import CallTask

CONTRACTS: dict[str, type[BaseModel]] = {
    "prospect_event": ProspectEvent,
    "call_task": CallTask,
    "call_outcome": CallOutcome,
    "prediction_record": PredictionRecord,
    "model_manifest": ModelManifest,
    "dead_letter": DeadLetter,
    "do_not_call_entry": DoNotCallEntry,
}

COMMITTED_DIR = Path(__file__).parent / "json"


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, deterministic so a stale committed copy is detectable."""
    rendered = {}
    for name, model in CONTRACTS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"callqueue-scorer/{name}.schema.json"
        rendered[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in render_schemas().items():
        path = directory / filename
        path.write_text(text)
        written.append(path)
    return written
