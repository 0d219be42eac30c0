"""Property-based fuzzing of a real `callscore api` from the published OpenAPI description
(docs/openapi.yaml) with schemathesis: whatever it sends, no route answers 5xx."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from core.kafka import ensure_topics
from testkit.harness import ApiWorker, publish_model, worker_settings

OPENAPI = Path(__file__).parents[1] / "docs" / "openapi.yaml"
TOKEN = "s3cret"
# Per operation and generation mode: bounded, so the test stays well under a minute.
EXAMPLES = 60


@pytest.mark.slow
def test_fuzzing_from_the_openapi_description_finds_no_5xx(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path, api_token=TOKEN)
    ensure_topics(settings)
    publish_model(settings, version=1)
    api = workers(settings, "api", ApiWorker)
    api.wait_ready()  # ready: the model loaded and the call queue mirrored
    schema = schemathesis.openapi.from_path(OPENAPI)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.lower(), op.path) for op in operations} == {
        ("post", "/score"),
        ("get", "/model"),
        ("get", "/queue"),
        ("post", "/queue/claim"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    }
    statuses: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    skipped: list[str] = []

    def fuzz(operation: Any, mode: GenerationMode) -> None:
        # Every request carries the token, so invalid bodies reach the parsing and validation
        # (test_http_api covers malformed Authorization headers).
        headers = {"Authorization": f"Bearer {TOKEN}"}

        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def probe(case: Any) -> None:
            response = case.call(base_url=api.base_url, headers=headers, timeout=10)
            statuses[(f"{case.method} {case.path}", response.status_code)] += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.path} -> {response.status_code}: "
                    f"{case.as_curl_command()}"[:2000]
                )

        try:
            probe()
        except Unsatisfiable:
            # An operation without parameters or body has no invalid request to make.
            assert not mode.is_positive, f"no valid request for {operation.label}"
            skipped.append(operation.label)

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode)

    summary = "\n".join(f"{route} {status}: {n}" for (route, status), n in sorted(statuses.items()))
    print(f"\nschemathesis: {sum(statuses.values())} requests\n{summary}")
    print(f"no negative cases for: {skipped}")
    assert "POST /score" not in skipped
    assert not failures, "\n".join(failures[:5])
    assert sum(statuses.values()) >= len(operations) * 2, "schemathesis sent next to nothing"
    # Both kinds reached /score: requests it scored and requests it refused with a 4xx.
    score = {status for (route, status) in statuses if route == "POST /score"}
    assert 200 in score and any(400 <= s < 500 for s in score), score
    assert api.http("GET", "/healthz").status == 200
