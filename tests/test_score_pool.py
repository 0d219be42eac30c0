"""ScorePool without a broker: /score processes yield the CPU to the stream, and a model that
cannot reach them is answered (None -> 503), never left hanging."""

from __future__ import annotations

import asyncio
import os

from core.settings import Settings
from streamer.web import ScorePool


class UnpicklableModel:
    version = 1
    record_offset = 0

    def __reduce__(self) -> str:
        raise TypeError("this model cannot be pickled")


def test_score_processes_run_at_a_lower_priority() -> None:
    pool = ScorePool(processes=1, queue=1, niceness=7)
    try:
        own = os.nice(0)
        assert pool._executor.submit(os.nice, 0).result(timeout=60) == min(own + 7, 19)
    finally:
        pool.shutdown()


def test_a_model_that_cannot_reach_the_process_is_answered_not_hung() -> None:
    pool = ScorePool(processes=1, queue=1)
    try:
        assert pool.try_acquire()
        scoring = pool.score(b"[]", UnpicklableModel(), Settings())  # type: ignore[arg-type]
        assert asyncio.run(asyncio.wait_for(scoring, timeout=30)) is None
        assert pool.in_flight == 0
    finally:
        pool.shutdown()
