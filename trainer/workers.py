"""joblib's worker processes end with the process that started them.

The training's parallel parts (`trainer.evaluation`'s backtest and random CV, scikit-learn's
`n_jobs` in `trainer.final.calibrated`) run on joblib's default backend, loky. Its reusable
executor keeps the workers (each an interpreter holding the training data, ~300 MB on
bank-full) for `idle_worker_timeout` (300 s) after a call, for the next one, and ends them at a
normal interpreter exit. A process that dies otherwise orphans them (parent pid 1), with loky's
resource tracker: SIGTERM under Python's default disposition (how `bench.tools.replay_loop`
stops `callscore schedule`), SIGKILL, the OOM killer. An idle orphan exits 300-330 s later; one
that was receiving a task when its parent died waits for the rest of it, forever.

Two guards:

- `watch_parent()` makes loky (the default backend, also `prefer="processes"`) start workers
  that exit within `PARENT_CHECK_SECONDS` once their parent is gone, whatever stopped it, SIGKILL
  included; loky's resource tracker follows when no worker holds its pipe any more. The training
  code calls it before it runs anything in parallel.
- `stop_workers()` ends this process's workers at once; `callscore`'s main calls it when a
  command ends, also when SIGTERM ends it (`callscore.cli.sigterm_exits`).

Both lean on joblib 1.6's internals (`register_parallel_backend` is documented as experimental,
the loky backend class and the reusable executor are not public); tests/test_process_cleanup.py
checks what they do, so an upgrade that changes them shows.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

PARENT_CHECK_SECONDS = 0.5
EXIT_PARENT_GONE = 3  # nobody reads it: the orphan's new parent reaps it


def exit_with_parent(parent: int) -> None:
    """A worker's initializer: exit as soon as `parent`, the process that started it, is gone
    (its parent pid then changes, to 1 or to a subreaper)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def watch_parent() -> None:
    """From now on, this process's loky workers exit with it (idempotent, cheap)."""
    from joblib import parallel

    loky = parallel.BACKENDS.get("loky")
    if loky is None or getattr(loky, "workers_exit_with_parent", False):
        return  # no process backend on this platform, or registered already
    parallel.register_parallel_backend("loky", _watched(loky))


def _watched(loky: Any) -> Any:
    """joblib's loky backend whose executor runs `exit_with_parent` in each new worker."""

    class ParentWatchedLoky(loky):
        workers_exit_with_parent = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # A backend per Parallel call; joblib reuses its executor while these stay equal.
            kwargs.setdefault("initializer", exit_with_parent)
            kwargs.setdefault("initargs", (os.getpid(),))
            super().__init__(*args, **kwargs)

    return ParentWatchedLoky


def stop_workers() -> None:
    """End this process's loky workers now, if it started any (nothing is imported otherwise).

    The executor's temporary folders go with them (joblib's `terminate`). Not
    `loky.get_reusable_executor().shutdown(...)`: with its default arguments that replaces
    joblib's executor (it waits for the running tasks) by a new one and stops the new one."""
    reusable = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(reusable, "_executor", None)
    if executor is None:
        return
    if hasattr(executor, "terminate"):  # joblib's MemmappingExecutor
        executor.terminate(kill_workers=True)
    else:
        executor.shutdown(wait=True, kill_workers=True)
