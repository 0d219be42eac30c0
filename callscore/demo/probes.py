"""What the running scorer and monitor say over HTTP: the served version, their metrics.

Each probe answers None while the endpoint is not up yet (or not answering): the demo polls
them every second and takes the next answer.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from core.settings import Settings

HTTP_TIMEOUT_SECONDS = 0.5


def serving_version(settings: Settings) -> int | None:
    """The model version the scorer serves (its GET /model), if it answers."""
    return version_of(_get_json(f"http://127.0.0.1:{settings.http_port}/model"))


def scorer_metrics(settings: Settings) -> str | None:
    """The scorer's /metrics text (the call queue's counts), if it answers."""
    return _get_text(f"http://127.0.0.1:{settings.http_port}/metrics")


def monitor_metrics(settings: Settings) -> str | None:
    """The monitor's /metrics text, if it answers."""
    return _get_text(f"http://127.0.0.1:{settings.monitor_http_port}/metrics")


def version_of(document: Any) -> int | None:
    """The version in a GET /model body, if any."""
    if isinstance(document, dict) and isinstance(document.get("version"), int):
        return int(document["version"])
    return None


def _get_text(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as reply:
            return str(reply.read().decode())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _get_json(url: str) -> Any:
    text = _get_text(url)
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None
