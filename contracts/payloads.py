"""The data classes that cross the Temporal boundary: workflow inputs and results, activity
arguments and results, the status query's answer. Built with keywords, never positional Nones."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contracts.vocabulary import ErrorInfo, JobStatus


@dataclass(frozen=True)
class Tuning:
    """Knobs from the settings, fixed when a job starts (where the API builds it from the
    settings) so replays and every child of the job see the same values. No defaults: a
    default task queue would route the ECS activities to a queue no worker serves."""

    window: int
    children_per_run: int
    activity_max_attempts: int
    activity_max_interval_seconds: float
    task_running_timeout_seconds: float
    ecs_task_queue: str
    # RunTask as a local activity on the worker running the child (no ECS rate limit set): no
    # activity task round trip through Temporal per charger. With a rate limit, RunTask goes to
    # `ecs_task_queue`, whose server-side limit holds for the whole fleet.
    ecs_local_starts: bool
    # start-to-close of one activity attempt: how soon an attempt lost with a crashed worker is
    # retried elsewhere (no step takes more than a few seconds when healthy)
    activity_timeout_seconds: float
    # start-to-close of a child's workflow task: how soon a task lost with a crashed worker moves
    # on (the server's default is 10 s); a default so that jobs started before it still decode
    workflow_task_timeout_seconds: float = 10.0
    # the job's completion callback (defaults: jobs started before callbacks existed still decode)
    callback_max_interval_seconds: float = 300.0
    callback_delivery_seconds: float = 6 * 3600.0


@dataclass
class CarriedProgress:
    """What one run of BulkCreateLocations hands the next across continue-as-new."""

    next_index: int = 0
    succeeded: int = 0
    failed: int = 0
    resubmittable_failures: int = 0  # failed locations whose error may succeed when resubmitted
    cancelled: int = 0
    first_error_code: str | None = None
    runs: int = 1


@dataclass
class BulkCreateInput:
    """Small on purpose: the locations themselves travel through PostgreSQL (`job_locations`)."""

    job_id: str
    cpo_id: int
    total: int
    tuning: Tuning
    carried: CarriedProgress = field(default_factory=CarriedProgress)


@dataclass
class JobProgress:
    """The `status` query's answer (for operators: `temporal workflow query --type status`)."""

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
    tuning: Tuning


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
    ecs_task_queue: str
    step_seconds: float = 60.0  # start-to-close of each step: how soon a dead worker's step is retried


@dataclass
class LocationPatch:
    """Already validated and normalized by the API: OCPI column name -> new value.

    `change_id`: the API's id of this change (what its `applied` wait names). The changes of one
    location are applied in the order their signals reached the location's LocationUpdates
    workflow, so no host's clock orders them; the location's OCPI last_updated is the time the
    change commits (db/ocpi_clock.py). `last_updated`: the API's stamp of changes accepted by an
    older API, kept only so that their waits still find them."""

    cpo_id: int
    location_id: str
    fields: dict[str, Any]
    last_updated: str = ""
    change_id: str = ""

    @property
    def key(self) -> str:
        return self.change_id or self.last_updated


def change_stamp(moment: datetime) -> str:
    """The `last_updated` of a LocationPatch of an older API: fixed width, sortable."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass
class LocationUpdatesInput:
    """The per-location LocationUpdates workflow: what a run carries into the next one."""

    cpo_id: int
    location_id: str
    pending: list[LocationPatch] = field(default_factory=list)
    changes_per_run: int = 100
    step_seconds: float = 60.0  # start-to-close of applying one change


@dataclass
class ActivateInput:
    job_id: str
    index: int
    location_id: str
    charger_ids: list[str]


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
    state: JobStatus
    location_id: str | None = None
    charger_ids: list[str] | None = None
    error: ErrorInfo | None = None


@dataclass
class JobCounts:
    """Locations of a job by state (from `job_locations`)."""

    ready: int = 0
    failed: int = 0
    cancelled: int = 0
    pending: int = 0
    provisioning: int = 0

    @property
    def ended_badly(self) -> int:
        return self.failed + self.cancelled


@dataclass
class JobOutcome:
    job_id: str
    status: JobStatus
    succeeded: int
    failed: int
    error: ErrorInfo | None = None


@dataclass
class ReconcileInput:
    """What one run of the job reconciler looks at: PROVISIONING jobs older than the grace period
    (their workflow had time to start, or to write its end), at most `limit` of them a run."""

    grace_seconds: float
    limit: int = 200


@dataclass
class ReconcileReport:
    """What one run of the job reconciler did (its result in the Web UI)."""

    examined: int = 0
    started: int = 0  # no workflow: started (same id, same input)
    failed: int = 0  # terminated, failed or timed out: the job marked FAILED
    finalized: int = 0  # completed or cancelled: the final state the workflow would have written
    running: int = 0  # nothing to repair


@dataclass
class CallbackInput:
    """The completion callback of a job: the event is built from the job's row when it is first
    delivered; the bounds come from the job's tuning."""

    job_id: str
    max_interval_seconds: float
    delivery_seconds: float
    attempt_seconds: float
