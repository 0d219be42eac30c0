"""/score under load does not stall the stream: the stream's end-to-end latency with and without
clients hammering `callscore api`'s /score, side by side beside one scorer. The ratio is printed,
not asserted (a wall-clock bound would be flaky on a shared machine; bench/ measures it); what is
asserted is that every event was scored and that /score answered 200/422 or 503, nothing else."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections import Counter

import pytest

from core.kafka import producer_config
from core.settings import Settings
from testkit.factories import valid_event
from testkit.harness import collect, worker_settings

TOKEN = "s3cret"
RATE = 200  # events per second, as in the finding
PHASE_SECONDS = 6.0
REQUEST_EVENTS = 500


def paced(settings: Settings, prefix: str, seconds: float) -> dict[str, float]:
    """Produce RATE events per second for `seconds`; returns event_id -> time sent."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(settings, **{"enable.idempotence": False}))
    sent: dict[str, float] = {}
    start = time.time()
    for n in range(int(RATE * seconds)):
        due = start + n / RATE
        time.sleep(max(0.0, due - time.time()))
        event = valid_event(event_id=f"{prefix}-{n}", prospect_id=f"p-{prefix}-{n}")
        producer.produce(
            settings.topic_prospects,
            key=event["prospect_id"].encode(),
            value=json.dumps(event).encode(),
        )
        sent[event["event_id"]] = time.time()
        producer.poll(0)
    assert producer.flush(15) == 0
    return sent


def hammer(port: int, body: bytes, stop: threading.Event, statuses: Counter[int]) -> None:
    """Back-to-back /score requests until stopped."""
    while not stop.is_set():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        connection.request("POST", "/score", body, headers)
        response = connection.getresponse()
        response.read()
        statuses[response.status] += 1
        connection.close()


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


@pytest.mark.slow
def test_stream_latency_with_and_without_score_load(kafka_settings, tmp_path, scorer_and_api):
    settings = worker_settings(kafka_settings, tmp_path, api_token=TOKEN)
    scorer_and_api(settings)  # the load goes to the API, the events to the scorer
    paced(settings, "warmup", 1.0)

    quiet = paced(settings, "quiet", PHASE_SECONDS)
    valid = json.dumps([valid_event(event_id=f"h{i}") for i in range(REQUEST_EVENTS)]).encode()
    invalid = json.dumps([valid_event(event_id=f"x{i}", age=7) for i in range(REQUEST_EVENTS)])
    stop = threading.Event()
    valid_statuses: Counter[int] = Counter()
    invalid_statuses: Counter[int] = Counter()
    clients = [
        threading.Thread(target=hammer, args=(settings.api_port, valid, stop, valid_statuses)),
        threading.Thread(
            target=hammer, args=(settings.api_port, invalid.encode(), stop, invalid_statuses)
        ),
    ]
    for client in clients:
        client.start()
    try:
        loaded = paced(settings, "loaded", PHASE_SECONDS)
    finally:
        stop.set()
        for client in clients:
            client.join(30)

    expected = int(RATE * (1.0 + 2 * PHASE_SECONDS))
    tasks = collect(
        settings, settings.task_topics.values(), lambda r: len(r) >= expected, timeout=60
    )
    done = {t.json()["event_id"]: t.timestamp_ms / 1000 for t in tasks}
    missing = (set(quiet) | set(loaded)) - set(done)
    assert not missing, f"{len(missing)} events not scored"
    latency = {
        name: [done[e] - sent for e, sent in phase.items()]
        for name, phase in (("quiet", quiet), ("loaded", loaded))
    }
    p50 = {name: percentile(values, 50) for name, values in latency.items()}
    p99 = {name: percentile(values, 99) for name, values in latency.items()}
    ratio = p99["loaded"] / max(p99["quiet"], 1e-3)
    print(
        f"\nstream latency at {RATE}/s: without /score load p50 {p50['quiet'] * 1000:.0f} ms "
        f"p99 {p99['quiet'] * 1000:.0f} ms; with back-to-back {REQUEST_EVENTS}-event /score "
        f"requests (valid and invalid) p50 {p50['loaded'] * 1000:.0f} ms "
        f"p99 {p99['loaded'] * 1000:.0f} ms; p99 ratio {ratio:.2f}; "
        f"/score valid {dict(valid_statuses)}, invalid {dict(invalid_statuses)}"
    )
    assert valid_statuses[200] > 0 and set(valid_statuses) <= {200, 503}, valid_statuses
    assert invalid_statuses[422] > 0 and set(invalid_statuses) <= {422, 503}, invalid_statuses
