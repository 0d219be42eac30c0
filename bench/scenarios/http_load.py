"""Load generator for `POST /score`, run in its own process so that its CPU is not the bench's
(and its GIL not the paced producer's): `concurrency` clients send the same body back to back
for `seconds`, after one unmeasured warm-up request (the first one starts /score's process).

    python -m bench.scenarios.http_load URL BODY_FILE EVENTS_PER_REQUEST SECONDS CONCURRENCY

Prints one JSON object (results.HttpLoad): requests, statuses, requests/s, events/s (200s only),
p50/p99/max ms.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.results import HttpLoad

WARMUP_TIMEOUT_SECONDS = 120.0
REQUEST_TIMEOUT_SECONDS = 30.0
HEADERS = {"Content-Type": "application/json"}


async def _load(url: str, body: bytes, events: int, seconds: float, concurrency: int) -> HttpLoad:
    import aiohttp

    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm_started = time.perf_counter()
        warm_timeout = aiohttp.ClientTimeout(total=WARMUP_TIMEOUT_SECONDS)
        async with session.post(url, data=body, headers=HEADERS, timeout=warm_timeout) as r:
            await r.read()
            warm_status = r.status
        warmup = time.perf_counter() - warm_started
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=HEADERS) as response:
                        await response.read()
                        statuses[response.status] += 1
                except (aiohttp.ClientError, TimeoutError):
                    statuses[0] += 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.array([0.0])
    ok = statuses.get(200, 0)
    return HttpLoad(
        events_per_request=events,
        concurrency=concurrency,
        seconds=round(elapsed, 2),
        warmup_seconds=round(warmup, 2),
        warmup_status=warm_status,
        requests=sum(statuses.values()),
        statuses={str(k): v for k, v in sorted(statuses.items())},
        requests_per_s=round(ok / elapsed, 1),
        events_per_s=round(ok * events / elapsed, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1),
        max_ms=round(float(ms.max()), 1),
    )


class LoadProcess:
    """The generator as a child process of the bench; `result()` waits for its JSON."""

    def __init__(
        self, url: str, body_file: Path, events: int, seconds: float, concurrency: int
    ) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.scenarios.http_load",
                url,
                str(body_file),
                str(events),
                str(seconds),
                str(concurrency),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def result(self, timeout: float) -> HttpLoad:
        out, err = self.process.communicate(timeout=timeout)
        if self.process.returncode != 0:
            raise RuntimeError(f"http load generator failed:\n{err.decode(errors='replace')}")
        return HttpLoad.model_validate_json(out)


def main() -> None:
    url, body_file, events, seconds, concurrency = sys.argv[1:6]
    body = Path(body_file).read_bytes()
    result = asyncio.run(_load(url, body, int(events), float(seconds), int(concurrency)))
    print(result.model_dump_json())


if __name__ == "__main__":
    main()
