"""Retry policies and the mapping of a failed activity to a location's stable error."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TimeoutError,
)

from workflows.shared import ERROR_RETRYABLE, LocationError, Tuning

# Errors the activities raise as non-retryable carry one of ERROR_RETRYABLE's codes as their
# type; listing them here too means a code raised by mistake as retryable still stops at once.
PERMANENT_TYPES = [code for code, retryable in ERROR_RETRYABLE.items() if not retryable] + [
    "ECS_CAPACITY",
    "ECS_TASK_STOPPED",
]


def retry_policy(tuning: Tuning) -> RetryPolicy:
    """Throttling, 5xx, connection and database errors retry with exponential backoff."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=tuning.activity_max_interval_seconds),
        maximum_attempts=tuning.activity_max_attempts,
        non_retryable_error_types=PERMANENT_TYPES,
    )


def location_error(err: BaseException, fallback_code: str) -> LocationError:
    """The stable error a client sees for a location whose step failed with `err`."""
    cause: BaseException | None = err
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError) and cause.type in ERROR_RETRYABLE:
        return LocationError(cause.type, cause.message, ERROR_RETRYABLE[cause.type])
    if isinstance(cause, TimeoutError):
        return LocationError("PROVISIONING_TIMEOUT", f"a step timed out: {cause.message}", True)
    if isinstance(cause, CancelledError):
        return LocationError("CANCELLED", "the job was cancelled", True)
    message = getattr(cause, "message", None) or str(cause)
    return LocationError(fallback_code, f"retries exhausted: {message}", ERROR_RETRYABLE[fallback_code])
