"""`python -m worker.health`: the worker container's health check (exit 0 healthy, 1 not).

Healthy when the worker's heartbeat file is fresh (its event loop turns and its Temporal workers
run: see `worker.telemetry`) and, when a metrics port is set, its Prometheus endpoint answers.
Reads the same settings as the worker, so it runs in the worker's container as it is.
"""

from __future__ import annotations

import sys
import time
import urllib.request

from settings import Settings, get_settings
from worker.telemetry import health_file, metrics_url


def problems(settings: Settings, now: float | None = None) -> list[str]:
    found: list[str] = []
    path = health_file(settings)
    stale_after = 3 * settings.worker_health_interval_seconds
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        found.append(f"no heartbeat file {path}: the worker is not running")
    else:
        if age > stale_after:
            found.append(f"heartbeat {path} is {age:.0f}s old (more than {stale_after:.0f}s)")
    url = metrics_url(settings)
    if url is not None:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status != 200:
                    found.append(f"metrics endpoint {url} answered {response.status}")
        except OSError as err:
            found.append(f"metrics endpoint {url} does not answer: {err}")
    return found


def main() -> int:
    found = problems(get_settings())
    for problem in found:
        print(f"unhealthy: {problem}", file=sys.stderr)
    if not found:
        print("healthy")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
