"""What a demo run is asked to do (already parsed: `callscore.commands.demo` reads the text)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from core.local_broker.common import BrokerKind


@dataclass(frozen=True)
class DemoOptions:
    out: Path = Path("out/demo")
    data: Path | None = None
    synthetic: bool = False
    download_timeout: float = 10.0  # 0: never download
    prospects: int = 5000  # about this many prospect rows are replayed
    start: str | None = None  # first replayed month; default: from `prospects`
    replay_seconds: float = 30.0
    bad_rate: float = 0.02
    outcome_delay: timedelta = timedelta(days=2)
    search: str = "reference"
    # The broker the demo starts when none is configured; Tansu shortens the replay (setup).
    broker: BrokerKind = "kafka"
