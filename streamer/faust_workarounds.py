"""Every work-around for faust-streaming 0.15.3 (pinned in pyproject.toml), and nothing else.

Each one names the Faust behaviour it works around and what it relies on; re-check them all
when upgrading Faust or aiokafka.

1. `StreamApp`: Faust hard-codes the consumer's fetch wait.
2. `send_all`: `Topic.send` costs more than the scoring; the producer is used directly.
3. `abandon_batch`: `take_events()` acks a batch even when the agent failed on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import EventT

from core.topic_writer import Outgoing

log = logging.getLogger(__name__)


# --- 1. the fetch wait -------------------------------------------------------------------------
# faust-streaming 0.15.3 builds its worker consumer with `fetch_max_wait_ms=1500` and offers no
# setting for it (faust/transport/drivers/aiokafka.py, `AIOKafkaConsumerThread.
# _create_worker_consumer`). On a quiet topic the broker holds each fetch that long, which sets
# the end-to-end latency (docs/local-broker.md; p99 1.4-3 s with the default, under 0.1 s at
# 10 ms). Relies on: aiokafka (0.14.0) keeps the value in `AIOKafkaConsumer._fetch_max_wait_ms`
# and reads it only in `start()`, when it builds its Fetcher; so we let Faust build the consumer
# and replace the value before it starts. Settings.fetch_max_wait_ms chooses it (each idle
# consumer costs the broker more CPU when it is low).


def _consumer_thread_class(fetch_max_wait_ms: int) -> type[faust_aiokafka.AIOKafkaConsumerThread]:
    class FetchWaitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by AIOKafkaConsumer.start()
            return consumer

    return FetchWaitConsumerThread


def _transport_class(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    thread_class = _consumer_thread_class(fetch_max_wait_ms)

    class FetchWaitConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> Any:
            return thread_class(self, loop=self.loop, beacon=self.beacon)

    class FetchWaitTransport(faust_aiokafka.Transport):
        Consumer = FetchWaitConsumer

    return FetchWaitTransport


class StreamApp(faust.App):
    """A faust.App whose Kafka consumer waits at most `fetch_max_wait_ms` per fetch.

    Relies on `faust.App._new_transport` being the one place the transport class is chosen.
    """

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self._fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        transport_class = _transport_class(self._fetch_max_wait_ms)
        return transport_class(self.conf.broker_consumer, self)


# --- 2. sending outputs ------------------------------------------------------------------------
async def send_all(app: faust.App, records: Sequence[Outgoing]) -> None:
    """Produce `records` and return once the broker acknowledged every one of them.

    Works around the cost of `Topic.send` in faust-streaming 0.15.3: per message it builds a
    FutureMessage (prepare_key/prepare_value through the serializers), calls the sensors and adds
    a done-callback to the delivery future; for a batch of already serialized bytes that cost
    more than the scoring (a side-by-side run measured about 1.7x throughput going direct,
    commit ee0b527). Relies on: `app.producer.send(topic, key, value, partition, timestamp,
    headers)` (faust/transport/drivers/aiokafka.py, `Producer.send`) passing the bytes straight
    to aiokafka's `AIOKafkaProducer.send`, which returns as soon as its accumulator holds the
    record, with the future of the broker's acknowledgement; the app is built with
    `producer_acks=-1` (acks=all). Given up with it: Faust's send sensors (`on_send_initiated`,
    `on_send_completed`) never see these records (our own metrics count them), and Faust's
    attachments (`stream_publish_on_commit`) never apply to them.
    """
    send = app.producer.send
    pending: list[Awaitable[Any]] = []
    for record in records:
        pending.append(
            await send(record.topic, record.key, record.value, None, None, record.headers)
        )
    await asyncio.gather(*pending)


# --- 3. a failed batch -------------------------------------------------------------------------
async def abandon_batch(app: faust.App, events: Sequence[EventT], exc: BaseException) -> None:
    """Make sure no commit passes a batch that was not published, then stop the worker.

    Call it from the agent's `except BaseException` around one `take_events()` batch, then
    re-raise. Works around two faust-streaming 0.15.3 behaviours:
    - `Stream.take_events` acks every event of the batch it yielded in a `finally` around its
      `yield`, i.e. on the next iteration and also when the abandoned generator is closed,
      whether or not the agent succeeded (faust/streams.py). An acked offset becomes committable
      (`Consumer.ack` records it in `_acked`; commits advance to the first gap in it).
      Relies on: `Message.ack` and `Consumer.ack` doing nothing for a message whose `acked` is
      already True; so setting it here keeps these offsets out of `_acked`, every later commit
      of the partition stops before the first of them, and the next owner re-reads them.
    - an exception that leaves an agent only crashes that actor: the default
      `agent_supervisor` (mode.OneForOneSupervisor) restarts it in this process, which would go
      on with later batches while this one stays unpublished and its partition's commits stuck.
      `app.crash` stops the whole worker instead, so the partition moves to another owner.
    CancelledError and GeneratorExit mean the worker is stopping or rebalancing: the events are
    still kept uncommitted, but nothing is crashed.
    """
    for event in events:
        event.message.acked = True
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return
    log.critical(
        "batch of %d events could not be scored and published (%s: %s); "
        "stopping this worker without committing them",
        len(events),
        type(exc).__name__,
        exc,
    )
    await app.crash(exc)
