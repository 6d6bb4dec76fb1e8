"""One vocabulary: the states a job, a location and a charger deployment move through, and the
stable error codes a client sees, each with what retrying it means."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


# A bulk job, and each of its locations (`job_locations.state`): they share these states.
# PENDING is the reference's word for "accepted, not started": a location waits in it for its
# child workflow; a job is PROVISIONING from its 202 on and never goes back to PENDING.
# (Comments, not a docstring: the enum is in the OpenAPI document, which stays as it was.)
class JobStatus(StrEnum):
    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    READY = "READY"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.READY, JobStatus.FAILED, JobStatus.CANCELLED)


class LocationStatus(StrEnum):
    """A provisioned location's row (`ocpi_locations.status`)."""

    PROVISIONING = "PROVISIONING"
    ACTIVE = "ACTIVE"
    DECOMMISSIONING = "DECOMMISSIONING"  # on its way out: reads no longer show it
    REMOVED = "REMOVED"  # gone for this API; kept (EVSEs REMOVED) for the OCPI eMSPs


class DeploymentState(StrEnum):
    """A charger's deployment (`charger_deployments.state`)."""

    PENDING = "PENDING"  # rows written, no task yet
    LAUNCHING = "LAUNCHING"  # RunTask may have been sent: a later attempt looks for its task first
    STARTING = "STARTING"  # RunTask answered; not RUNNING yet
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"  # decommission under way


class EvseStatus(StrEnum):
    """OCPI 2.2.1 EVSE status values this service sets."""

    PLANNED = "PLANNED"  # while its location is provisioned
    AVAILABLE = "AVAILABLE"  # once READY
    REMOVED = "REMOVED"  # its location was deleted


@dataclass(frozen=True)
class ErrorSpec:
    """Two different questions, answered separately:

    - `temporal_retries`: does Temporal retry the failing step (with backoff) before the error
      becomes the location's outcome? False for permanent errors, raised non-retryable.
    - `resubmit_may_succeed`: may the client's own retry (POSTing the location again later)
      succeed? This is the `retryable` flag of the API's `error`.
    """

    temporal_retries: bool
    resubmit_may_succeed: bool
    # what a tenant reads: fixed, what to do next, never our internals (AWS text, SQL, hosts and
    # account ids stay in the logs and in the workflow's failure in Temporal)
    message: str


class ErrorCode(StrEnum):
    INVALID_LOCATION = "INVALID_LOCATION"
    CHARGER_IDENTITY_CONFLICT = "CHARGER_IDENTITY_CONFLICT"
    ECS_INVALID_PARAMETER = "ECS_INVALID_PARAMETER"
    ECS_ACCESS_DENIED = "ECS_ACCESS_DENIED"
    ECS_CONFIGURATION = "ECS_CONFIGURATION"
    ECS_RUN_TASK_FAILED = "ECS_RUN_TASK_FAILED"
    ECS_CAPACITY = "ECS_CAPACITY"
    ECS_TASK_STOPPED = "ECS_TASK_STOPPED"
    ECS_UNAVAILABLE = "ECS_UNAVAILABLE"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    PROVISIONING_TIMEOUT = "PROVISIONING_TIMEOUT"
    CANCELLED = "CANCELLED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    LOCATIONS_FAILED = "LOCATIONS_FAILED"  # the job's error: some of its locations failed
    # the job's workflow ended without finishing it (terminated by an operator, failed, timed
    # out): the reconciler ends the job and its unfinished locations with this code
    JOB_INTERRUPTED = "JOB_INTERRUPTED"

    @property
    def resubmit_may_succeed(self) -> bool:
        return ERRORS[self].resubmit_may_succeed


def _permanent(message: str) -> ErrorSpec:
    return ErrorSpec(temporal_retries=False, resubmit_may_succeed=False, message=message)


def _transient(message: str) -> ErrorSpec:
    return ErrorSpec(temporal_retries=True, resubmit_may_succeed=True, message=message)


def _later(message: str) -> ErrorSpec:
    """Not retried in place (retrying now would only fail again); a later resubmission may work."""
    return ErrorSpec(temporal_retries=False, resubmit_may_succeed=True, message=message)


_SUPPORT = "contact the operator of this gateway"
ERRORS: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.INVALID_LOCATION: _permanent("the location's input could not be read; submit it again"),
    ErrorCode.CHARGER_IDENTITY_CONFLICT: _permanent(
        "a charger identity of this location is already used in this CPO's network; use another"
    ),
    ErrorCode.ECS_INVALID_PARAMETER: _permanent(f"the charger's task was refused by ECS; {_SUPPORT}"),
    ErrorCode.ECS_ACCESS_DENIED: _permanent(f"the gateway may not start charger tasks; {_SUPPORT}"),
    ErrorCode.ECS_CONFIGURATION: _permanent(f"the charger platform is misconfigured; {_SUPPORT}"),
    ErrorCode.ECS_RUN_TASK_FAILED: _permanent(f"the charger's task could not be started; {_SUPPORT}"),
    # the account's Fargate quota: frees up, or gets raised
    ErrorCode.ECS_CAPACITY: _later(
        "no capacity to start the charger's task now; submit the location again later"
    ),
    ErrorCode.ECS_TASK_STOPPED: _later("the charger's task stopped before it ran; submit the location again"),
    # what transient errors become once their retries run out
    ErrorCode.ECS_UNAVAILABLE: _transient("ECS did not answer in time; submit the location again later"),
    ErrorCode.DATABASE_UNAVAILABLE: _transient(
        "the database did not answer in time; submit the location again later"
    ),
    ErrorCode.PROVISIONING_TIMEOUT: _transient("provisioning took too long; submit the location again later"),
    ErrorCode.CANCELLED: _later("the job was cancelled before this location was provisioned"),
    ErrorCode.INTERNAL_ERROR: _transient("an unexpected error occurred; submit the location again later"),
    ErrorCode.LOCATIONS_FAILED: _later("some locations failed; see results.locations[].error"),
    ErrorCode.JOB_INTERRUPTED: _later(
        "the job was stopped before this location was provisioned; "
        "READY locations stay, submit the others again"
    ),
}

# The error types an activity raises that Temporal must not retry: its retry policies list them.
NON_RETRYABLE_TYPES: list[str] = [code.value for code, spec in ERRORS.items() if not spec.temporal_retries]


@dataclass
class ErrorInfo:
    """A stable error as a client sees it: on a location of the job's results, and on the job."""

    code: str
    message: str
    retryable: bool  # = the code's `resubmit_may_succeed`

    @classmethod
    def of(cls, code: ErrorCode, message: str | None = None) -> ErrorInfo:
        """The code's fixed message unless one is given (only for texts free of internals)."""
        return cls(
            code=code.value, message=message or ERRORS[code].message, retryable=code.resubmit_may_succeed
        )
