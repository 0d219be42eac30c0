"""The events every scenario sends: rows of the same bank data the production model trains on,
made into prospect events by simulator.events.events_from_frame, sampled with one seed so that
every scenario (and every run) sends the same payloads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from callscore.simulator.events import events_from_frame

SEED = 11


@dataclass(frozen=True)
class Events:
    """Events as dicts and as the (key, value) bytes a producer sends."""

    dicts: list[dict[str, Any]]

    @property
    def ids(self) -> list[str]:
        return [e["event_id"] for e in self.dicts]

    def records(self) -> list[tuple[bytes, bytes]]:
        return [(e["prospect_id"].encode(), json.dumps(e).encode()) for e in self.dicts]

    def __len__(self) -> int:
        return len(self.dicts)


class Payloads:
    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def events(self, prefix: str, n: int) -> Events:
        """The first n events of the fixed sample, their ids `<prefix>-<i>`, each of a prospect
        of its own (`<prefix>-cust-<i>`): a set of events never rescores another set's
        prospects, so with the call queue every event queues one new task, whatever ran before."""
        rows = self._frame.sample(n=n, replace=n > len(self._frame), random_state=SEED)
        prospects = [f"{prefix}-cust-{i}" for i in range(n)]
        return Events(events_from_frame(rows, prefix, prospect_ids=prospects))
