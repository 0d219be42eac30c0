"""POST /queue/claim through `callscore api` and a scorer (real broker): 20 agents at once never
hold one prospect twice; a restarted API keeps the claims; an expired lease returns its task."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.kafka import ensure_topics
from core.topic_reader import read_topics
from testkit.factories import valid_event
from testkit.harness import ApiWorker, event_bytes, produce, publish_model, worker_settings

PROSPECTS = 30
AGENTS = 20
WAIT_SECONDS = 60


def holders(answers: list[dict[str, Any]]) -> dict[str, list[str]]:
    held: dict[str, list[str]] = {}
    for answer in answers:
        for task in answer["tasks"]:
            assert task["claimed_by"] == answer["agent"]
            held.setdefault(task["prospect_id"], []).append(answer["agent"])
    return held


def test_twenty_agents_a_restart_and_an_expired_lease(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path, claim_lease_seconds=120.0)
    ensure_topics(settings)
    publish_model(settings, version=1)
    workers(settings, "scorer").wait_ready()
    api = workers(settings, "api", ApiWorker)
    api.wait_ready()
    events = [valid_event(event_id=f"c{i}", prospect_id=f"C{i}") for i in range(PROSPECTS)]
    produce(settings, [event_bytes(e) for e in events])
    api.wait_open_tasks(PROSPECTS, WAIT_SECONDS)

    with ThreadPoolExecutor(AGENTS) as pool:
        answers = list(pool.map(lambda i: api.claim(f"agent-{i}", 2), range(AGENTS)))
    held = holders(answers)
    assert all(len(agents) == 1 for agents in held.values()), held  # never two at once
    assert len(held) >= AGENTS  # every agent got something, most got two
    # What the queue topic says agrees with the answers, prospect by prospect.
    records = read_topics(settings, [settings.topic_queue], timeout=30)
    newest = {r.key.decode(): json.loads(r.value) for r in records if r.value is not None}
    assert {p: newest[p]["claimed_by"] for p in held} == {p: a[0] for p, a in held.items()}

    # A restarted API (here with 2-second leases) keeps the claims: only the free ones go.
    api.stop()
    short = settings.model_copy(update={"claim_lease_seconds": 2.0})
    again = workers(short, "api-again", ApiWorker)
    again.wait_ready()
    rest = again.claim("late-agent", PROSPECTS)
    taken = {t["prospect_id"] for t in rest["tasks"]}
    assert taken == {e["prospect_id"] for e in events} - set(held)

    # An expired lease returns its task.
    first = {t["prospect_id"] for t in again.claim("x", 1)["tasks"]}
    assert first == set()  # everything is held now
    time.sleep(2.5)  # late-agent's 2-second leases run out
    returned = again.claim("y", PROSPECTS)
    assert {t["prospect_id"] for t in returned["tasks"]} == taken
