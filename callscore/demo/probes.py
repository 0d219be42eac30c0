"""What the running scorer, API and monitor say over HTTP: their metrics (the served version is
the scorer's `callscore_model_version` gauge: it serves only /healthz, /readyz and /metrics).

Each probe answers None while the endpoint is not up yet (or not answering) and waits at most
HTTP_TIMEOUT_SECONDS: the demo polls them every second and takes the next answer. The claims of
the demo's agent, which wait for the queue's decisions, run in a thread (`callscore.demo.agent`).
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request

from callscore.demo.state import prometheus_samples
from core.settings import Settings

HTTP_TIMEOUT_SECONDS = 0.5


def scorer_metrics(settings: Settings) -> str | None:
    """The scorer's /metrics text (the served version, the call queue's counts), if it answers."""
    return _get_text(f"http://127.0.0.1:{settings.http_port}/metrics")


def monitor_metrics(settings: Settings) -> str | None:
    """The monitor's /metrics text, if it answers."""
    return _get_text(f"http://127.0.0.1:{settings.monitor_http_port}/metrics")


def served_version(metrics: str) -> int | None:
    """The version in the scorer's `callscore_model_version` gauge; None for 0 (no model yet)
    or no gauge."""
    for name, labels, value in prometheus_samples(metrics):
        if name == "callscore_model_version" and not labels:
            if math.isnan(value) or value < 1:
                return None
            return int(value)
    return None


def _get_text(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as reply:
            return str(reply.read().decode())
    except (OSError, urllib.error.URLError, ValueError):
        return None
