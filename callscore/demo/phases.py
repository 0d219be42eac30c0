"""The demo's phases, in the order a run goes through them; the labels are only for the screen."""

from __future__ import annotations

from enum import Enum, auto


class Phase(Enum):
    STARTING = auto()
    TRAINING = auto()  # v1 is trained; the scorer, the monitor and the API start meanwhile
    WAITING_FOR_SCORER = auto()  # the trainer is done, the scorer has not loaded v1 yet
    REPLAY = auto()  # `callscore simulate` runs (`callscore recalibrate` once), the agent claims
    DRAINING = auto()  # the replay is published; the scorer handles its last events and retries
    SETTLING = auto()  # the monitor joins the last outcomes; the report is written
    FINISHING = auto()  # the scorer, the monitor and the API are stopped
    DONE = auto()

    @property
    def label(self) -> str:
        """What the live view and the plain lines show."""
        return LABELS[self]


LABELS: dict[Phase, str] = {
    Phase.STARTING: "starting",
    Phase.TRAINING: "training",
    Phase.WAITING_FOR_SCORER: "waiting for the scorer",
    Phase.REPLAY: "replay",
    Phase.DRAINING: "draining",
    Phase.SETTLING: "settling: the monitor joins the last outcomes",
    Phase.FINISHING: "finishing: quality report, stopping the scorer, the monitor and the API",
    Phase.DONE: "done",
}
