"""Data classes and names that cross the Temporal boundary (workflow inputs, results, queries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from temporalio.common import SearchAttributeKey


class JobStatus(StrEnum):
    PENDING = "PENDING"  # kept for the reference's vocabulary; a job never goes back to it
    PROVISIONING = "PROVISIONING"
    READY = "READY"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class LocationState(StrEnum):
    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    READY = "READY"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


# Custom search attributes (registered by the dev server's --search-attribute, by the tests
# through the operator service, and by `temporal operator search-attribute create` in production).
CPO_ID = SearchAttributeKey.for_keyword("CpoId")
JOB_STATUS = SearchAttributeKey.for_keyword("JobStatus")
SEARCH_ATTRIBUTES: dict[str, str] = {"CpoId": "Keyword", "JobStatus": "Keyword"}

WORKFLOW_BULK_CREATE = "BulkCreateLocations"
WORKFLOW_PROVISION = "ProvisionLocation"


# Activity names: workflows refer to activities by name so that no activity module (database,
# aioboto3) is ever imported into the workflow sandbox.
ACT_WRITE_LOCATION_ROWS = "write_location_rows"
ACT_ACTIVATE_LOCATION = "activate_location"
ACT_DELETE_LOCATION_ROWS = "delete_location_rows"
ACT_RECORD_LOCATION_OUTCOME = "record_location_outcome"
ACT_FINALIZE_JOB = "finalize_job"
ACT_START_CHARGER_TASK = "start_charger_task"
ACT_WAIT_TASKS_RUNNING = "wait_tasks_running"
ACT_STOP_LOCATION_TASKS = "stop_location_tasks"
ACT_MARK_DECOMMISSIONING = "mark_location_decommissioning"
ACT_UPDATE_LOCATION = "update_location_fields"
ACT_CANCEL_PENDING_LOCATIONS = "cancel_pending_locations"

WORKFLOW_DECOMMISSION = "DecommissionLocation"
WORKFLOW_UPDATE = "UpdateLocation"

# Stable error codes of a location, and whether re-submitting it later may succeed.
ERROR_RETRYABLE: dict[str, bool] = {
    "INVALID_LOCATION": False,
    "CHARGER_IDENTITY_CONFLICT": False,
    "ECS_INVALID_PARAMETER": False,
    "ECS_ACCESS_DENIED": False,
    "ECS_CONFIGURATION": False,
    "ECS_RUN_TASK_FAILED": False,
    "ECS_CAPACITY": True,
    "ECS_TASK_STOPPED": True,
    "ECS_UNAVAILABLE": True,
    "DATABASE_UNAVAILABLE": True,
    "PROVISIONING_TIMEOUT": True,
    "CANCELLED": True,
    "INTERNAL_ERROR": True,
}


@dataclass
class Tuning:
    """Knobs from Settings, fixed when the job starts so replays see the same values."""

    window: int = 100
    children_per_run: int = 1000
    activity_max_attempts: int = 12
    activity_max_interval_seconds: float = 30.0
    task_running_timeout_seconds: float = 600.0
    ecs_task_queue: str | None = None
    # start-to-close of one activity attempt: how soon an attempt lost with a crashed worker
    # is retried elsewhere (none of the steps takes more than a few seconds when healthy)
    activity_timeout_seconds: float = 60.0


@dataclass
class BulkCreateInput:
    """Small on purpose: the locations themselves travel through PostgreSQL (`job_locations`)."""

    job_id: str
    cpo_id: int
    total: int
    tuning: Tuning = field(default_factory=Tuning)
    # progress carried across continue-as-new
    next_index: int = 0
    succeeded: int = 0
    failed: int = 0
    retryable_failures: int = 0
    cancelled: int = 0
    first_error_code: str | None = None
    runs: int = 1


@dataclass
class JobProgress:
    """The `status` query's answer."""

    job_id: str
    status: JobStatus
    total: int
    succeeded: int
    failed: int
    in_progress: int
    runs: int


@dataclass
class ProvisionInput:
    job_id: str
    cpo_id: int
    index: int
    tuning: Tuning = field(default_factory=Tuning)


@dataclass
class ChargerPlan:
    deployment_id: str
    charge_point_id: str
    identity: str


@dataclass
class LocationPlan:
    """What the first activity wrote and the rest of the child needs (ids only, never the input)."""

    location_id: str
    chargers: list[ChargerPlan] = field(default_factory=list)


@dataclass
class ChargerTaskInput:
    job_id: str
    index: int
    location_id: str
    deployment_id: str
    identity: str


@dataclass
class TaskRef:
    deployment_id: str
    task_arn: str
    # what ECS last said of the task: RunTask's answer, or "ADOPTED" (unknown until described)
    last_status: str = "PROVISIONING"


@dataclass
class WaitTasksInput:
    location_id: str
    tasks: list[TaskRef]


@dataclass
class StopTasksInput:
    location_id: str
    deployment_ids: list[str]


@dataclass
class LocationRef:
    cpo_id: int
    location_id: str
    ecs_task_queue: str | None = None


@dataclass
class LocationPatch:
    """Already validated and normalized by the API: OCPI column name -> new value."""

    cpo_id: int
    location_id: str
    fields: dict[str, Any]


@dataclass
class ActivateInput:
    job_id: str
    index: int
    location_id: str
    charger_ids: list[str]


@dataclass
class LocationError:
    """Stable error of one location: what the status endpoint shows as `error`."""

    code: str
    message: str
    retryable: bool


@dataclass
class ProvisionResult:
    index: int
    location_id: str
    charger_ids: list[str]


@dataclass
class LocationOutcome:
    """What a child records on its `job_locations` row."""

    job_id: str
    index: int
    state: LocationState
    location_id: str | None = None
    charger_ids: list[str] | None = None
    error: LocationError | None = None


@dataclass
class JobCounts:
    ready: int
    failed: int
    cancelled: int


@dataclass
class JobOutcome:
    job_id: str
    status: JobStatus
    succeeded: int
    failed: int
    error: LocationError | None = None
