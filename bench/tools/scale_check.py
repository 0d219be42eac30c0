"""One scheduler's checks, measured in a process that imports what `callscore schedule` does
and nothing of the bench (its factories import scikit-learn, ~85 MB a check never needs):
part of `bench.tools.scale`.

    python -m bench.tools.scale_check NEW_CALLS   (Settings from the environment)

Two checks, then an hour of new calls produced by another process (`bench.tools.scale
produce-new`, so their generation does not count here), then a third check. Prints one JSON
line: each check's seconds and the process's peak RSS after the first and after all three.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.resources import peak_rss_mb
from core.settings import Settings
from trainer.schedule import Scheduler


def main() -> None:
    new_calls = int(sys.argv[1])
    settings = Settings(_env_file=None)
    found: dict[str, object] = {}
    started = time.monotonic()
    scheduler = Scheduler.for_cli(settings, None, Path(tempfile.mkdtemp()))
    decision, _observation = scheduler.check()
    del _observation
    found["seconds"] = time.monotonic() - started
    found["peak_rss_mb"] = peak_rss_mb(os.getpid())
    again = time.monotonic()
    scheduler.check()
    found["again_seconds"] = time.monotonic() - again
    produce = [sys.executable, "-m", "bench.tools.scale", "produce-new", str(new_calls)]
    subprocess.run(produce, check=True, env=os.environ)
    after = time.monotonic()
    scheduler.check()
    found["new_calls"] = new_calls
    found["new_seconds"] = time.monotonic() - after
    found["peak_rss_mb_after_new"] = peak_rss_mb(os.getpid())
    found["decision"] = decision.line()
    print(json.dumps(found))


if __name__ == "__main__":
    main()
