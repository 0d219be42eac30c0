"""A bounded memory of recent event ids, to drop repeated events within a window.

The window is a count of distinct event ids (Settings.dedupe_window), oldest forgotten first.
Memory, measured by `bench/tools/dedupe_memory.py` (docs/streamer.md): about 150 bytes per id for
the OrderedDict plus the id string itself (49 bytes + its length), i.e. 190-240 bytes per id;
the default window of 100,000 ids costs about 21-23 MiB per replica.
Duplicates older than the window, or replayed after a restart, are scored again; that is harmless
because the task id is derived from the event id (dialers deduplicate on it).
"""

from __future__ import annotations

from collections import OrderedDict


class RecentIds:
    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def seen(self, event_id: str) -> bool:
        """True if the id is within the window (a duplicate); otherwise remember it."""
        if self.capacity == 0:
            return False
        if event_id in self._ids:
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False
