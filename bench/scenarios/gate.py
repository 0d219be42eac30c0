"""The start line of a ceiling process: it says when it holds its partitions (a `ready` file)
and consumes only once the bench says go (a `go` file), as a scorer holds its partitions and
scores only once the bench publishes the model. So every backlog scenario starts draining at a
moment the bench chooses, with its CPU window already open."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Gate:
    ready: Path
    go: Path

    @classmethod
    def in_dir(cls, directory: Path, name: str) -> Gate:
        """A new gate: a file left by an earlier process would let this one go at once."""
        gate = cls(directory / f"{name}.ready", directory / f"{name}.go")
        if gate.ready.exists() or gate.go.exists():
            raise FileExistsError(f"gate {name} was used before: give each process its own")
        return gate

    def args(self) -> tuple[str, str]:
        return str(self.ready), str(self.go)

    @classmethod
    def from_args(cls, args: list[str]) -> Gate:
        ready, go = args
        return cls(Path(ready), Path(go))

    def wait_ready(self, timeout: float, check_alive: Callable[[], None]) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {self.ready.name} after {timeout:.0f} s")
            time.sleep(POLL_SECONDS)
