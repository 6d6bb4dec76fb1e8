"""Our worker metrics, through the Temporal SDK's metric meter: they are served by the same
Prometheus endpoint as the SDK's own (`worker/telemetry.py`), with the SDK's labels
(`namespace`, `task_queue`, `activity_type`) added. Outside a worker (no runtime with metrics,
the tests' ActivityEnvironment) the meter is a no-op.

- `ocpplab_locations_total{outcome, error_code}`: locations by outcome, counted where the
  outcome is written, once per location (the writes check the row's previous state, so a
  retried activity does not count twice);
- `ocpplab_run_task_seconds{result}`: latency of ECS RunTask (`started`, `failures`, `error`);
- `ocpplab_location_ready_seconds`: from the job's creation (the POST) to the location's
  activation.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity
from temporalio.common import MetricMeter

LOCATIONS = "ocpplab_locations_total"
RUN_TASK_SECONDS = "ocpplab_run_task_seconds"
LOCATION_READY_SECONDS = "ocpplab_location_ready_seconds"

# seconds; the SDK's default buckets are for milliseconds
BUCKETS: dict[str, list[float]] = {
    RUN_TASK_SECONDS: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    LOCATION_READY_SECONDS: [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
}


def _meter() -> MetricMeter:
    if activity.in_activity():
        return activity.metric_meter()
    return MetricMeter.noop


def location_outcome(outcome: str, error_code: str | None, count: int = 1) -> None:
    if count > 0:
        _meter().create_counter(LOCATIONS, "locations by outcome and error code").add(
            count, {"outcome": str(outcome), "error_code": str(error_code or "")}
        )


def run_task(seconds: float, result: str) -> None:
    _meter().create_histogram_float(RUN_TASK_SECONDS, "latency of one ECS RunTask call", "s").record(
        seconds, {"result": result}
    )


def location_ready(elapsed: timedelta) -> None:
    location_outcome("READY", None)
    _meter().create_histogram_float(
        LOCATION_READY_SECONDS, "from the job's creation to the location's activation", "s"
    ).record(max(elapsed.total_seconds(), 0.0))
