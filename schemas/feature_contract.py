"""The feature contract, derived from ProspectEvent: names, kinds, value sets and their hash.

A model records `feature_contract_hash()` at training time; a scorer refuses a model whose hash
differs from its own, because the model would be fed columns it was not trained on.
"""

from __future__ import annotations

import hashlib
import json
import typing
from functools import cache
from typing import Any

from schemas.prospect import EVENT_METADATA_FIELDS, POST_CALL_FIELDS, ProspectEvent

FEATURES: tuple[str, ...] = tuple(
    name for name in ProspectEvent.model_fields if name not in EVENT_METADATA_FIELDS
)
# A feature as a column beside a record's own fields (the lake's predictions, labelled history).
FEATURE_COLUMN_PREFIX = "feature_"


def _categories(annotation: Any) -> tuple[str, ...] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(typing.get_args(annotation))
    return None


CATEGORIES: dict[str, tuple[str, ...]] = {
    name: cats
    for name in FEATURES
    if (cats := _categories(ProspectEvent.model_fields[name].annotation)) is not None
}
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(n for n in FEATURES if n in CATEGORIES)
NUMERIC_FEATURES: tuple[str, ...] = tuple(n for n in FEATURES if n not in CATEGORIES)

assert not set(POST_CALL_FIELDS) & set(FEATURES), "post-call fields can never be features"


@cache
def feature_contract_hash() -> str:
    """sha256 of the canonical JSON Schema of the feature fields (names, types, ranges, values)."""
    schema = ProspectEvent.model_json_schema()
    contract = {name: schema["properties"][name] for name in FEATURES}
    canonical = json.dumps(contract, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
