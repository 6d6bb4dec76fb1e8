"""The worker's Prometheus endpoint and its liveness heartbeat.

Metrics come from the Temporal SDK's runtime (Core serves `/metrics` itself): the SDK's own
series (`temporal_*`: task slots, poll latencies, workflow/activity outcomes and latencies, in
milliseconds as the SDK's dashboards expect) and ours, recorded through the same meter
(`activities/metrics.py`). One endpoint per worker process: with several processes on one host
give each its own `WORKER_METRICS_PORT`.

The heartbeat is a file the worker touches every `WORKER_HEALTH_INTERVAL_SECONDS` while its event
loop turns and every Temporal worker in it still runs; `python -m worker.health` (the
container's health check) fails when it is stale.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from activities.metrics import BUCKETS
from settings import Settings


def metrics_address(settings: Settings) -> str | None:
    if not settings.worker_metrics_port:
        return None
    return f"{settings.worker_metrics_host}:{settings.worker_metrics_port}"


def metrics_url(settings: Settings) -> str | None:
    """What `WORKER_METRICS_URL` should say for this process."""
    if not settings.worker_metrics_port:
        return None
    host = settings.worker_metrics_host
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: reachable on the loopback
        host = "127.0.0.1"
    return f"http://{host}:{settings.worker_metrics_port}/metrics"


def worker_runtime(settings: Settings) -> Runtime | None:
    """A runtime serving Prometheus metrics, or None (the SDK's default runtime, no endpoint).
    Raises when the port is taken: a worker whose metrics nobody can scrape should not start."""
    address = metrics_address(settings)
    if address is None:
        return None
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=address, histogram_bucket_overrides=BUCKETS)
        )
    )


def health_file(settings: Settings) -> Path:
    if settings.worker_health_file:
        return Path(settings.worker_health_file)
    return Path(tempfile.gettempdir()) / f"ocpplab-worker-{settings.worker_metrics_port or 0}.alive"


async def heartbeat(settings: Settings, runs: Sequence[asyncio.Task[None]]) -> None:
    """Touch the health file while every worker runs; stop touching it when one has stopped."""
    path = health_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        while not any(run.done() for run in runs):
            path.touch()
            await asyncio.sleep(settings.worker_health_interval_seconds)
    finally:
        path.unlink(missing_ok=True)
