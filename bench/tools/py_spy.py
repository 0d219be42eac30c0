"""py-spy beside the suite's consumers, and its raw output grouped by stage and library.

`recorder(path)` is a bench.context.Observer: during a throughput scenario's drain it runs
`py-spy record --gil` on each consumer process (what holds the GIL: the CPU the worker spends),
raw format, into `path` (or `<path stem>-<process>.txt` beside it for two workers or more).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.context import Observer

SAMPLES_PER_SECOND = 200
START_SECONDS = 1.0  # py-spy attaches before the consumer is let go
STOP_TIMEOUT_SECONDS = 60


def py_spy_binary() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy not found: `.venv/bin/pip install py-spy` (it needs ptrace)")
    return found


def output_paths(path: Path, pids: dict[str, int]) -> dict[str, Path]:
    if len(pids) == 1:
        return {name: path for name in pids}
    return {name: path.with_name(f"{path.stem}-{name}.txt") for name in pids}


def recorder(path: Path) -> Observer:
    binary = py_spy_binary()

    @contextlib.contextmanager
    def record(_scenario: str, pids: dict[str, int]) -> Iterator[None]:
        outputs = output_paths(path, pids)
        spies = [
            subprocess.Popen(
                [
                    *(binary, "record", "--pid", str(pid), "--format", "raw"),
                    *("--rate", str(SAMPLES_PER_SECOND), "--gil", "--nonblocking"),
                    *("-o", str(outputs[name])),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, pid in pids.items()
        ]
        try:
            time.sleep(START_SECONDS)
            yield
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            for spy in spies:
                try:
                    spy.wait(STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    spy.kill()

    return record


OUR_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the innermost (nearest the leaf) of our stages a sample is in
    ("serialisation", ("_task_record", "_prediction_record", "dead_letter_record", "._outgoing")),
    ("validation", ("decode_batch", "decode_prospect", "decode_json")),
    ("feature building", ("feature_frame", "feature_columns", "trainer/feature_engineering.py")),
    ("predict_proba", ("predict (registry/", "registry/serving")),
    ("tasks (ranks, tiers, CallTask)", ("score_events",)),
    ("producing (send_all)", ("send_all",)),
)
# Otherwise, the library whose frame is nearest the leaf.
LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aiokafka producer", ("aiokafka/producer",)),
    ("aiokafka consumer/fetcher", ("aiokafka/consumer", "aiokafka/record", "aiokafka/protocol")),
    ("aiokafka client/conn", ("aiokafka/",)),
    ("Faust/mode", ("faust/", "mode/")),
    ("HTTP/metrics", ("aiohttp/", "prometheus")),
    ("event loop (asyncio/uvloop)", ("asyncio/", "uvloop", "selectors.py")),
)


def classify(stack: str) -> str:
    frames = stack.split(";")
    for groups in (OUR_STAGES, LIBRARIES):
        for frame in reversed(frames):
            for group, needles in groups:
                if any(n in frame for n in needles):
                    return group
    return "other"


def summarise_py_spy(path: str, top: int = 25) -> dict[str, Any]:
    groups: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        groups[classify(stack)] += count
        leaves[stack.split(";")[-1]] += count
    return {
        "samples": total,
        "groups_percent": {g: round(100 * c / total, 1) for g, c in groups.most_common()},
        "top_leaf_frames_percent": {
            f: round(100 * c / total, 1) for f, c in leaves.most_common(top)
        },
    }
