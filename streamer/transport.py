"""The one place that overrides Faust's hard-coded consumer fetch wait.

faust-streaming 0.15.3 builds its aiokafka consumer with `fetch_max_wait_ms=1500` and offers no
setting for it (faust/transport/drivers/aiokafka.py, `_create_worker_consumer`). On a quiet topic
the broker holds each fetch that long, which sets the end-to-end latency (docs/local-broker.md; p99
1.4-3 s with the default, under 0.1 s at 10 ms). aiokafka only reads the value when the consumer
starts, so we let Faust build the consumer and then replace the value before it starts.
Settings.fetch_max_wait_ms chooses it (each idle consumer costs the broker more CPU when low).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


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
    """A faust.App whose Kafka consumer waits at most `fetch_max_wait_ms` per fetch."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self._fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        transport_class = _transport_class(self._fetch_max_wait_ms)
        return transport_class(self.conf.broker_consumer, self)
