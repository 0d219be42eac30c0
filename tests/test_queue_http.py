"""Reading the call queue from a real broker: the queue mirror (streamer/queue_mirror.py),
GET /queue of a running scorer and `callscore queue top`.

The call-queue records are produced here directly (tasks, replacements, tombstones with their
reasons, on both partitions), so what is read is known exactly whatever the scorer does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from callscore.cli import main
from core.kafka import ensure_topics
from core.settings import Settings
from core.topic_writer import Outgoing, publish
from schemas import WITHDRAWAL_HEADER, CallTask, Priority, task_id_for
from streamer.queue_mirror import QueueMirror
from testkit.harness import ApiWorker, publish_model, worker_settings
from tests.test_readme import ROOT, readme_block

TOKEN = "s3cret"
WAIT_SECONDS = 30
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def task(prospect: str, event: str, score: float, tier: Priority, supersedes: str = "") -> CallTask:
    return CallTask(
        task_id=task_id_for(event),
        event_id=event,
        prospect_id=prospect,
        score=score,
        priority=tier,
        percentile=50.0,
        model_version=1,
        scored_at=NOW,
        expires_at=NOW + timedelta(days=14),
        supersedes=supersedes or None,
    )


def queued(t: CallTask) -> Outgoing:
    return Outgoing("", t.prospect_id.encode(), t.model_dump_json().encode())


def withdrawn(t: CallTask, reason: str) -> Outgoing:
    headers = [("task_id", t.task_id.encode()), (WITHDRAWAL_HEADER, reason.encode())]
    return Outgoing("", t.prospect_id.encode(), None, headers)


def produce_queue(settings: Settings, records: list[Outgoing]) -> None:
    """To the call-queue topic, keyed by prospect (the partitioner spreads them), acked."""
    aimed = [Outgoing(settings.topic_queue, r.key, r.value, r.headers) for r in records]
    publish(settings, aimed, "test queue records", **{"enable.idempotence": False})


A = task("P1", "e-a", 0.30, "low")
B = task("P1", "e-b", 0.91, "high", supersedes=A.task_id)  # P1 rescored: replaces A
C = task("P2", "e-c", 0.75, "high")
D = task("P3", "e-d", 0.55, "medium")
E = task("P4", "e-e", 0.62, "medium")
F = task("P5", "e-f", 0.80, "high")
G = task("P6", "e-g", 0.20, "low")
H = task("P7", "e-h", 0.55, "medium")  # the same score as D: ordered by task_id
RECORDS = [
    queued(A),
    queued(C),
    queued(D),
    queued(E),
    queued(F),
    queued(G),
    queued(H),
    queued(B),
    withdrawn(C, "closed"),
    withdrawn(E, "expired"),
    withdrawn(F, "suppressed"),
]
MEDIUM = sorted([D, H], key=lambda t: t.task_id)
BEST = [B, *MEDIUM, G]
OPEN = {"high": 1, "medium": 2, "low": 1}
WITHDRAWN = {"closed": 1, "recycled": 0, "expired": 1, "suppressed": 1}


def wait_for(predicate, what: str, timeout: float = WAIT_SECONDS):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer := predicate():
            return answer
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ids(tasks: list[CallTask] | list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [t.task_id if isinstance(t, CallTask) else t["task_id"] for t in tasks]


def test_the_mirror_reads_to_the_end_then_follows(kafka_settings):
    settings = kafka_settings
    ensure_topics(settings)
    produce_queue(settings, RECORDS)
    mirror = QueueMirror(settings, poll_seconds=0.1)
    assert mirror.view() is None, "nothing is answered before the topic was read"
    mirror.start()
    try:
        view = wait_for(mirror.view, "the mirror to read the queue to its end")
        top = view.top(10)
        assert ids(top.tasks) == ids(BEST)
        assert top.open_by_tier == OPEN and top.withdrawals == WITHDRAWN
        assert ids(view.top(10, "medium").tasks) == ids(MEDIUM)
        assert view.records_applied == len(RECORDS)

        # live: P6 rescored into high, P1's task closed
        better = task("P6", "e-i", 0.99, "high", supersedes=G.task_id)
        produce_queue(settings, [queued(better), withdrawn(B, "closed")])
        wait_for(lambda: view.records_applied == len(RECORDS) + 2, "the new records")
        top = view.top(10)
        assert ids(top.tasks) == ids([better, *MEDIUM])
        assert top.open_by_tier == {"high": 1, "medium": 2, "low": 0}
        assert top.withdrawals["closed"] == 2
    finally:
        mirror.stop()


def test_an_absent_queue_topic_reads_as_empty(kafka_settings):
    mirror = QueueMirror(kafka_settings, poll_seconds=0.1)
    mirror.start()
    try:
        view = wait_for(mirror.view, "the mirror to find no queue topic")
        assert view.top(5).tasks == [] and view.top(5).open_total == 0
    finally:
        mirror.stop()


def test_get_queue_answers_the_best_open_tasks(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path, api_token=TOKEN)
    ensure_topics(settings)
    produce_queue(settings, RECORDS)
    publish_model(settings, version=1)
    api = workers(settings, "api", ApiWorker)
    api.wait_ready()
    answer = wait_for(
        lambda: (r := api.http("GET", "/queue", token=TOKEN)).status == 200 and r.body,
        "GET /queue to answer 200",
    )
    assert ids(answer["tasks"]) == ids(BEST)
    assert answer["tasks"][0] == B.model_dump(mode="json")
    assert (answer["tier"], answer["limit"]) == (None, 50)
    assert answer["open_by_tier"] == OPEN and answer["open_total"] == 4
    assert answer["withdrawals"] == WITHDRAWN

    def get(query: str, token: str | None = TOKEN):  # type: ignore[no-untyped-def]
        return api.http("GET", f"/queue{query}", token=token)

    assert ids(get("?limit=2").body["tasks"]) == ids(BEST[:2])
    assert ids(get("?tier=medium").body["tasks"]) == ids(MEDIUM)
    assert ids(get("?tier=low&limit=1").body["tasks"]) == ids([G])
    assert ids(get("?tier=&limit=").body["tasks"]) == ids(BEST), "empty is the same as absent"
    assert get("?limit=1000").status == 200
    for query, parameter in [
        ("?tier=urgent", "tier"),
        ("?tier=HIGH", "tier"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?limit=-5", "limit"),
        ("?limit=%D9%A3", "limit"),  # an Arabic-Indic digit: int() would take it
    ]:
        refused = get(query)
        assert refused.status == 400, (query, refused.text)
        assert refused.body["error"].startswith(f"{parameter} must be"), refused.body
    assert get("", token=None).status == 401
    assert get("", token="wrong").status == 401

    # the queue changes while the API runs
    better = task("P6", "e-i", 0.99, "high", supersedes=G.task_id)
    produce_queue(settings, [queued(better)])
    top = wait_for(
        lambda: (b := get("?limit=1").body) and ids(b["tasks"]) == [better.task_id] and b,
        "the rescored task on top",
    )
    assert top["open_by_tier"] == {"high": 2, "medium": 2, "low": 0}


def test_callscore_queue_top_prints_the_queue(kafka_settings, monkeypatch, capsys):
    settings = kafka_settings
    ensure_topics(settings)
    produce_queue(settings, RECORDS)
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)

    assert main(["queue", "top", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if any(t in line for t in ids(BEST))]
    assert [next(t for t in ids(BEST) if t in line) for line in lines] == ids(BEST[:3]), out
    assert f"{B.prospect_id}" in lines[0] and "0.9100" in lines[0] and A.task_id in lines[0]
    assert "2026-12-10T09:00:00+00:00" in lines[0], "expires_at, 14 days after the event"
    assert "open tasks: 4 (high 1, medium 2, low 1)" in out
    assert "withdrawn: closed 1, recycled 0, expired 1, suppressed 1" in out

    assert main(["queue", "top", "--tier", "low"]) == 0
    out = capsys.readouterr().out
    assert G.task_id in out and B.task_id not in out and D.task_id not in out


@pytest.mark.parametrize("option, value", [("--limit", "0"), ("--limit", "1001"), ("--tier", "x")])
def test_callscore_queue_top_refuses_bad_arguments(option, value, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["queue", "top", option, value])
    assert exited.value.code == 2
    assert f"argument {option}:" in capsys.readouterr().err


def test_callscore_queue_top_without_kafka_is_one_line(settings, monkeypatch, capsys):
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CALLSCORE_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert main(["queue", "top"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("callscore: error: Kafka at 127.0.0.1:1"), err


def test_the_readme_mirror_builds_the_contact_list(kafka_settings):
    """README, "Integrating a dialer": the Python mirror ends with the queue's open tasks."""
    settings = kafka_settings
    ensure_topics(settings)
    produce_queue(settings, RECORDS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCORE_")}
    mirror = subprocess.Popen(
        [sys.executable, "-c", readme_block("queue-mirror")],
        cwd=ROOT,
        env=env | settings.as_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(mirror.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(lines) >= len(RECORDS), "a line per queue record")
        still_running = mirror.poll() is None
    finally:
        mirror.send_signal(signal.SIGINT)
        try:
            mirror.wait(20)
        except subprocess.TimeoutExpired:
            mirror.kill()
        reader.join(5)
    contacts: dict[str, str] = {}  # the last line per prospect, as the mirror's list holds it
    for line in lines:
        action, prospect, detail = line.strip().split(" ", 2)
        contacts[prospect.rstrip(":")] = f"{action} {detail}"
    assert contacts == {
        "P1": f"queued {B.task_id} 0.9100",
        "P2": "removed closed",
        "P3": f"queued {D.task_id} 0.5500",
        "P4": "removed expired",
        "P5": "removed suppressed",
        "P6": f"queued {G.task_id} 0.2000",
        "P7": f"queued {H.task_id} 0.5500",
    }, lines
    assert still_running, lines
    assert mirror.returncode == 0, lines
