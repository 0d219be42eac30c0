"""A row's contacts, as a dialer would report them to the call queue.

bank-full.csv has one row per client, `campaign` the contacts of this campaign including the
last, `y` the last contact's result. The file does not say how the earlier contacts ended; the
replay assumes none reached a decision (the only reading under which the client was called
again): each is answered with a disposition drawn from `NO_DECISION`'s shares, the last with the
row's `y`. So a row with `campaign` = c becomes c calls:

- attempt 1 is the row's event with `campaign` = 1, called after the replay's outcome delay;
- the call queue itself sends each retry (callqueue/rules.py): the event again with `campaign`
  + 1, due after the disposition's delay (or at the callback time); the replay calls it
  `DIAL_LAG` after it is due, naming the retry's task, whose id it derives as the queue does;
- at most `QueuePolicy.max_attempts` calls: a row with more contacts gives its `y` at the last
  attempt the queue allows (so its label has `campaign` = max_attempts, not c).

The plan times every call up front, in event time; but a retry exists only once the queue has
applied the previous outcome and the scorer has scored the retry, a round trip of seconds of
wall time, while `DIAL_LAG` is milliseconds of it at a replay's speed. So the replay holds each
call's outcome until the queue has decided the event it calls (simulator.hold: its line on the
prediction log), the first call's too, and the replay waits meanwhile: a call is never made
before its task exists (`callscore simulate --no-hold` makes them at their time, to measure
that race: most retries' calls are then stale).

So the only stale later calls are the queue's own decisions: a retry it does not queue (scored
under the floor, the prospect superseded, cooling down or objecting) makes the later calls'
outcomes stale: the queue decided not to call, and a real dialer would not have called either;
the row then gives no label. (The replay does not wait for a retry that will not come.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from callqueue.rules import QueuePolicy, retry_event_id
from schemas import Disposition, Recycled, task_id_for

# How the calls before the last ended (shares; a contact-center mix, not from the data).
NO_DECISION: tuple[tuple[Recycled, float], ...] = (
    ("no_answer", 0.6),
    ("busy", 0.15),
    ("voicemail", 0.2),
    ("callback", 0.05),
)
DIAL_LAG = timedelta(minutes=10)  # a due task is called this long after it is due
CALLBACK_AFTER = timedelta(days=1)  # a callback is asked for the next day, same hour


@dataclass(frozen=True)
class Attempt:
    number: int  # its `campaign`
    event_id: str  # the row's event, or the queue's retry of the previous attempt
    task_id: str
    called_at: datetime
    disposition: Disposition
    callback_at: datetime | None = None

    @property
    def last(self) -> bool:
        return self.disposition == "reached"


def row_attempts(
    event_id: str,
    campaign: int,
    first_call: datetime,
    policy: QueuePolicy,
    rng: np.random.Generator,
) -> list[Attempt]:
    """The calls of one row, first to last (the last reached the client)."""
    names = [name for name, _ in NO_DECISION]
    shares = [share for _, share in NO_DECISION]
    count = min(campaign, policy.max_attempts)
    attempts = []
    called = first_call
    for number in range(1, count + 1):
        task_id = task_id_for(event_id)
        if number == count:
            attempts.append(Attempt(number, event_id, task_id, called, "reached"))
            break
        disposition: Recycled = names[int(rng.choice(len(names), p=shares))]
        callback_at = called + CALLBACK_AFTER if disposition == "callback" else None
        attempts.append(Attempt(number, event_id, task_id, called, disposition, callback_at))
        due = callback_at or called + policy.retry_after.get(disposition, timedelta())
        event_id = retry_event_id(task_id)
        called = due + DIAL_LAG
    return attempts
