"""Hot reload under load: version 2 published while the stream runs at a fixed rate.

Measured from the outputs: the largest gap between consecutive call tasks (Kafka timestamps,
all tiers) over the whole phase, where it fell relative to the publication, the events never
scored or scored more than once, and which version scored how many (both must appear).
Version 2 is the same fitted production pipeline announced as a new version: a reload costs
the same whatever the weights are. Its manifest is built (serialized and signed) before the
stream starts, so the bench only produces it mid-stream.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterable

from bench.context import Context, manifest_for, publish
from bench.resources import peak_rss_mb
from bench.results import Reload
from bench.scenarios.latency import latencies_by_id, latency_stats, produce_paced, wait_for_tasks
from core.topic_reader import read_topics
from registry.model_topic import publish_manifest


def largest_gap(stamps_ms: Iterable[int]) -> tuple[int, int]:
    """(the largest gap between consecutive timestamps, where it starts); (0, 0) if none."""
    ordered = sorted(stamps_ms)
    return max(((b - a, a) for a, b in itertools.pairwise(ordered)), default=(0, 0))


def reload_under_load(ctx: Context) -> Reload:
    options = ctx.options
    settings = ctx.settings("reload")
    worker = ctx.worker(settings, "w0")
    events = ctx.payloads.events("reload", int(options.reload_rate * options.reload_seconds))
    version_two = manifest_for(settings, ctx.production, version=2)
    published_at_ms: list[int] = []

    def publish_midway() -> None:
        time.sleep(options.reload_seconds / 2)
        published_at_ms.append(int(time.time() * 1000))
        publish_manifest(settings, version_two)

    stamps: dict[str, int] = {}  # event id -> its prospect record's Kafka timestamp
    try:
        publish(settings, ctx.production, version=1)
        worker.wait_ready(90)
        publisher = threading.Thread(target=publish_midway, name="publish-v2")
        publisher.start()
        produce_paced(settings, events, options.reload_rate, stamps)
        publisher.join()
        # Read until every event has a task, then a little longer to catch one scored twice.
        timeout = min(120.0, options.drain_timeout_seconds)
        tasks = wait_for_tasks(settings, len(events), timeout=timeout, settle=1.0)
        reloads = worker.metric("callscore_model_reloads_total", 'result="loaded"')
        serving = worker.metric("callscore_model_version")
        rss = peak_rss_mb(worker.process.pid)
    finally:
        worker.stop()
    by_id = Counter(str(t.json()["event_id"]) for t in tasks)
    largest, gap_start = largest_gap(t.timestamp_ms for t in tasks)
    versions = Counter(int(t.json()["model_version"]) for t in tasks)
    first_v2 = min((t.timestamp_ms for t in tasks if t.json()["model_version"] == 2), default=None)
    published = published_at_ms[0]
    prospects = read_topics(settings, [settings.topic_prospects], timeout=60)
    input_gap, _ = largest_gap(r.timestamp_ms for r in prospects)
    # The gap that the reload itself can have caused: from the publication to a second after
    # the first task of version 2.
    until = (first_v2 or published) + 1000
    around, _ = largest_gap(t.timestamp_ms for t in tasks if published <= t.timestamp_ms <= until)
    latency = latencies_by_id(stamps, tasks)
    return Reload(
        rate_events_per_s=options.reload_rate,
        events=len(events),
        largest_gap_ms=largest,
        largest_gap_starts_ms_after_publish=gap_start - published,
        largest_gap_around_reload_ms=around,
        largest_input_gap_ms=input_gap,
        publish_to_first_v2_task_ms=None if first_v2 is None else first_v2 - published,
        lost=sum(1 for i in events.ids if i not in by_id),
        scored_twice=sum(1 for n in by_id.values() if n > 1),
        tasks_per_version={str(v): n for v, n in sorted(versions.items())},
        models_loaded_metric=reloads,
        serving_version_at_end=serving,
        latency=latency_stats(latency.values()),
        peak_rss_mb=[rss],
    )
