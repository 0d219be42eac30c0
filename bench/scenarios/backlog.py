"""Throughput on a backlog, measured the same way for every consumer (ceilings and scorers).

The backlog is produced before the consumer starts. The rate is the outputs' count over the span
from the first output's Kafka timestamp to the last one's (timestamps set by the consumer's own
producer when it sends), so neither start-up nor the bench's own reading is in it. Every output
is read back: each input event must come out exactly once (none lost, none twice).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from bench.resources import CpuWindow, per_10k
from bench.results import Backlog
from core.settings import Settings
from core.topic_reader import Record, TopicReader

# The bench's reader of the outputs must not add to the broker's load more than it must: it
# waits up to this long per fetch (the measured consumers use Settings.fetch_max_wait_ms).
READER_FETCH_WAIT_MS = 100
# Read a little past the expected count, to see an output produced twice.
SETTLE_SECONDS = 1.0

# Which input event an output record stands for.
EventIdOf = Callable[[Record], str]


def event_id_field(record: Record) -> str:
    """Call tasks, prediction-log lines and the pass-throughs' copies carry the event's id."""
    return str(record.json()["event_id"])


def queue_entry_event(record: Record) -> str:
    """A call-queue changelog record (callqueue.state.ProspectEntry): the event it queued."""
    entry: dict[str, Any] = record.json()
    return str(entry["newest_event_id"])


def output_reader(settings: Settings, topics: Iterable[str]) -> TopicReader:
    wait: dict[str, Any] = {"fetch.wait.max.ms": READER_FETCH_WAIT_MS}
    return TopicReader(settings, topics, group_prefix="bench-outputs", **wait)


def drain(
    settings: Settings,
    topics: Iterable[str],
    expected_ids: list[str],
    cpu: CpuWindow,
    check_alive: Callable[[], None],
    timeout: float,
    event_id_of: EventIdOf = event_id_field,
) -> Backlog:
    """Wait for one output per expected event; the rate, losses, repeats and CPU per 10k events.

    `cpu` was started just before the consumer was let go (a published model, a go file): it
    stops once the bench has seen the last expected output, so it covers the whole backlog.
    """
    expected = len(expected_ids)
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    with output_reader(settings, topics) as reader:
        while len(records) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(records)} of {expected} outputs after {timeout:.0f} s on {topics}"
                )
            check_alive()
            records.extend(reader.poll(0.1, max_records=10_000))
        spent = cpu.stop()
        settle_until = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < settle_until:
            records.extend(reader.poll(0.2, max_records=10_000))
    result = backlog_result(records, expected_ids, event_id_of)
    result.cpu_seconds_per_10k = {name: per_10k(s, expected) for name, s in spent.items()}
    return result


def backlog_result(
    records: list[Record], expected_ids: list[str], event_id_of: EventIdOf = event_id_field
) -> Backlog:
    counts = Counter(event_id_of(r) for r in records)
    stamps = [r.timestamp_ms for r in records]
    span = (max(stamps) - min(stamps)) / 1000.0 if stamps else 0.0
    return Backlog(
        events=len(expected_ids),
        outputs=len(records),
        lost=sum(1 for i in expected_ids if i not in counts),
        repeated=sum(1 for n in counts.values() if n > 1),
        span_seconds=round(span, 3),
        events_per_s=round(len(counts) / span) if span > 0 else None,
    )
