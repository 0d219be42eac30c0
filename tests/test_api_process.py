"""`callscore api`: the dialer-facing HTTP in its own process, beside a scorer (real broker)."""

from __future__ import annotations

from testkit.factories import valid_event
from testkit.harness import event_bytes, produce, worker_settings

WAIT_SECONDS = 60


def test_the_api_serves_score_model_and_queue_apart_from_the_stream(
    kafka_settings, tmp_path, scorer_and_api
):
    settings = worker_settings(kafka_settings, tmp_path, api_token="s3cret")
    _scorer, api = scorer_and_api(settings)
    assert api.readiness() == {
        "ready": True,
        "queue_mirrored": True,
        "model_loaded": True,
        "broker_reachable": True,
    }

    events = [valid_event(event_id=f"a{i}", prospect_id=f"A{i}", balance=i * 900) for i in range(3)]
    produce(settings, [event_bytes(e) for e in events])
    api.wait_until(
        lambda: api.http("GET", "/queue", token="s3cret").body["open_total"] == 3,
        WAIT_SECONDS,
        "the three tasks in the API's mirror of the call queue",
    )
    top = api.http("GET", "/queue", token="s3cret").body["tasks"]
    scored = api.http("POST", "/score", events, token="s3cret")
    assert scored.status == 200
    # The API scores with the model the stream served, to the bit.
    assert {t["event_id"]: t["score"] for t in top} == {
        r["event_id"]: r["score"] for r in scored.body
    }
    # token enforced; 422 with per-field errors
    assert api.http("POST", "/score", events[0]).status == 401
    assert api.http("GET", "/model", token="wrong").status == 401
    invalid = api.http("POST", "/score", [events[0], valid_event(age=7, job="pilot")], "s3cret")
    assert invalid.status == 422
    assert invalid.body["errors"][0]["index"] == 1
    assert {e["field"] for e in invalid.body["errors"][0]["field_errors"]} == {"age", "job"}
    model = api.http("GET", "/model", token="s3cret")
    assert model.status == 200 and model.body["version"] == 1
    assert set(model.body["tier_cut_points"]) == {"high", "medium"}
    assert api.metric("callscore_model_version") == 1
