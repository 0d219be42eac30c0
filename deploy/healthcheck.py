"""Container healthcheck (slim images have no curl): GET a local endpoint, exit 0 on HTTP 200.

`healthcheck.py` checks the scorer's /healthz on CALLSCORE_HTTP_PORT; `healthcheck.py api` the
API's on CALLSCORE_API_PORT; `healthcheck.py monitor` the monitor's /metrics on
CALLSCORE_MONITOR_HTTP_PORT. The ports come from the same Settings the process itself reads.
"""

from __future__ import annotations

import sys
import urllib.request

from core.settings import load_settings


def main(argv: list[str]) -> int:
    settings = load_settings()
    if argv[:1] == ["monitor"]:
        url = f"http://127.0.0.1:{settings.monitor_http_port}/metrics"
    elif argv[:1] == ["api"]:
        url = f"http://127.0.0.1:{settings.api_port}/healthz"
    else:
        url = f"http://127.0.0.1:{settings.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
