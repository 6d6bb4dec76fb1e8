"""Retry policies, and the mapping of a failed step to a location's stable error."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TimeoutError,
    TimeoutType,
)

from contracts.payloads import Tuning
from contracts.vocabulary import NON_RETRYABLE_TYPES, ErrorCode, ErrorInfo


def retry_policy(tuning: Tuning, *, forever: bool = False) -> RetryPolicy:
    """Throttling, 5xx, connection and database errors retry with exponential backoff; the
    error codes that are permanent do not. `forever` is for the clean-up and bookkeeping steps
    that must finish however long an outage lasts (giving up would leave rows behind)."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=tuning.activity_max_interval_seconds),
        maximum_attempts=0 if forever else tuning.activity_max_attempts,
        non_retryable_error_types=NON_RETRYABLE_TYPES,
    )


def _innermost(err: BaseException) -> BaseException:
    cause = err
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    return cause


def location_error(err: BaseException, fallback: ErrorCode) -> ErrorInfo:
    """The stable error a client sees for a location whose step failed with `err`: its code and
    the code's fixed message (the details stay in `failure_detail`, for logs and Temporal)."""
    cause = _innermost(err)
    if isinstance(cause, ApplicationError) and cause.type is not None and cause.type in ErrorCode.__members__:
        return ErrorInfo.of(ErrorCode(cause.type))
    if isinstance(cause, TimeoutError):
        # past a step's deadline (the wait for RUNNING): provisioning took too long; an attempt
        # that timed out (its retries spent): the service it called did not answer in time
        if cause.type == TimeoutType.SCHEDULE_TO_CLOSE:
            return ErrorInfo.of(ErrorCode.PROVISIONING_TIMEOUT)
        return ErrorInfo.of(fallback)
    if isinstance(cause, CancelledError):
        return ErrorInfo.of(ErrorCode.CANCELLED)
    return ErrorInfo.of(fallback)


def failure_detail(err: BaseException) -> str:
    """What really happened (AWS's or PostgreSQL's own words): for operators, never tenants."""
    cause = _innermost(err)
    return getattr(cause, "message", None) or str(cause)
