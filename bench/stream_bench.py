"""Kept for its old command: the suite's scorer throughput and latency scenarios only.

    .venv/bin/python -m bench.stream_bench [--rate 500] [--seconds 20] [--backlog 20000]
        [--set FIELD=VALUE ...]

is `python -m bench --only scorer_production latency_only --name stream_bench ...`; see
bench/__main__.py for the whole suite.
"""

from __future__ import annotations

import sys

from bench.__main__ import main as suite_main


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    suite_main(["--only", "scorer_production", "latency_only", "--name", "stream_bench", *args])


if __name__ == "__main__":
    main()
