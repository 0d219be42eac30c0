"""Stop signals during a demo: SIGTERM and SIGHUP clean up like Ctrl-C, and nothing interrupts
the cleanup itself."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (the terminal closed) raise KeyboardInterrupt like Ctrl-C: the
    children run in sessions of their own, so nothing else would stop them."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def ignored(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """These signals are ignored inside the block (a second Ctrl-C during the cleanup)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
