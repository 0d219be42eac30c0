"""Ceiling 1: a Faust agent that passes events through, no scoring.

Built like the scorer: the same Faust app (streamer.app.new_faust_app: raw serializers, the fetch
wait work-around, acks=all, linger, commit interval from Settings), batches from
`take_events(batch_max_size, within=batch_max_wait_seconds)`, each event JSON-decoded and sent
twice (scenarios/passthrough.py) through the scorer's own send path
(streamer.faust_workarounds.send_all), which returns once the broker acknowledged the batch.

It touches READY_FILE once it holds the prospects' partitions and consumes once GO_FILE exists
(scenarios/gate.py), as the scorer consumes once a model is published.

    python -m bench.scenarios.faust_passthrough READY_FILE GO_FILE
    # configured by CALLSCORE_* variables
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import faust

from bench.scenarios.gate import POLL_SECONDS, Gate
from bench.scenarios.passthrough import outputs
from core.settings import load_settings
from core.topic_writer import Outgoing
from streamer.app import new_faust_app
from streamer.faust_workarounds import send_all


def main() -> None:
    settings = load_settings()
    gate = Gate.from_args(sys.argv[1:3])
    del sys.argv[1:3]  # Faust's worker reads the command line too
    app = new_faust_app(settings)

    def assigned() -> bool:
        topics = {tp.topic for tp in app.consumer.assignment()}
        return settings.topic_prospects in topics and not app.rebalancing

    @app.agent(app.topic(settings.topic_prospects), name="pass-through")
    async def pass_through(stream: Any) -> None:
        while not assigned():
            await asyncio.sleep(POLL_SECONDS)
        gate.ready.touch()
        while not gate.go.exists():
            await asyncio.sleep(POLL_SECONDS)
        batches = stream.take_events(
            settings.batch_max_size, within=settings.batch_max_wait_seconds
        )
        async for events in batches:
            records = [
                Outgoing(topic, key, value, [])
                for event in events
                for topic, key, value in outputs(settings, event.message.key, event.message.value)
            ]
            await send_all(app, records)

    faust.Worker(app, loglevel="info").execute_from_commandline()


if __name__ == "__main__":
    main()
