"""The three workers of a worker process.

The main task queue runs the workflows and the database activities. The ECS activities run on a
queue of their own whose server-side rate limit (`ecs_activities_per_second`) keeps the whole fleet
of workers under ECS's RunTask throttle, however many replicas run. OCPI pushes to eMSPs run on a
third queue with bounded slots (`ocpi_push_max_concurrent`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.ecs_tasks import EcsTaskActivities
from activities.job_callback import JobCallbackActivities
from activities.job_state import JobStateActivities
from activities.location_changes import LocationChangeActivities
from activities.location_rows import LocationRowsActivities
from activities.ocpi_push import OcpiPushActivities
from activities.reconcile import JobReconcilerActivities
from settings import Settings
from worker.versioning import deployment_config
from workflows.bulk_create import BulkCreateLocations
from workflows.job_callback import JobCompletionCallback
from workflows.location_changes import DecommissionLocation, LocationUpdates, UpdateLocation
from workflows.ocpi_push import OcpiLocationPush
from workflows.provision_location import ProvisionLocation
from workflows.reconcile import ReconcileJobs

if TYPE_CHECKING:
    from types_aiobotocore_ecs import ECSClient
    from types_aiobotocore_secretsmanager import SecretsManagerClient


WORKFLOWS = [
    BulkCreateLocations,
    ProvisionLocation,
    DecommissionLocation,
    LocationUpdates,
    UpdateLocation,
    OcpiLocationPush,
    ReconcileJobs,
    JobCompletionCallback,
]


def workflow_runner(sandboxed: bool = True) -> WorkflowRunner:
    """The sandbox, with our own `workflows` and `contracts` packages passed through.

    By default the sandbox re-imports every non-standard module for each new workflow run, and
    re-executing our dataclass and enum definitions was a fifth of the worker's CPU per location
    (profiled). Both packages hold only deterministic code and no module-level state that a run
    could change, so one import serves every run; `contracts` is also where the workflows find
    the activities' typed interfaces, so no database or AWS module is imported by a workflow.
    The sandbox's call restrictions still apply inside the workflow code.

    `sandboxed=False` (the `workflow_sandbox` setting): no sandbox at all, for the A/B of what
    it costs (bench/); the suite and the replay check always run sandboxed.
    """
    if not sandboxed:
        return UnsandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows", "contracts")
    )


def build_workers(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    ecs: ECSClient,
    secrets: SecretsManagerClient,
    workflows: Sequence[type] = WORKFLOWS,
    runner: WorkflowRunner | None = None,
) -> list[Worker]:
    """The main, the ECS and the OCPI push worker; `workflows`/`runner`: a test deploys a changed
    version."""
    ocpi_push = OcpiPushActivities(sessions, settings, client)
    rows = LocationRowsActivities(sessions, settings, on_ready=ocpi_push.notify_partners)
    job = JobStateActivities(sessions)
    callbacks = JobCallbackActivities(sessions, settings, client)
    changes = LocationChangeActivities(sessions)
    ecs_acts = EcsTaskActivities(sessions, ecs, settings, secrets)
    ocpi = ocpi_push
    reconciler = JobReconcilerActivities(sessions, settings, client)
    # On SIGTERM, in-flight activities get this long to finish before the worker lets go of them.
    grace = timedelta(seconds=settings.worker_shutdown_grace_seconds)
    version = deployment_config(settings)  # both queues belong to the same deployment version
    main = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=workflows,
        workflow_runner=runner or workflow_runner(settings.workflow_sandbox),
        activities=[
            rows.write_location_rows,
            rows.activate_location,
            rows.delete_location_rows,
            job.record_location_outcome,
            job.finalize_job,
            job.cancel_pending_locations,
            callbacks.deliver_job_callback,
            callbacks.start_job_callback,
            changes.mark_location_decommissioning,
            changes.update_location_fields,
            ocpi.retire_location,
            ocpi.notify_partners,
            ocpi.push_location,
            reconciler.reconcile_jobs,
            ecs_acts.start_charger_task,  # as a local activity of ProvisionLocation (no rate limit)
        ],
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        max_concurrent_local_activities=settings.worker_max_concurrent_local_activities,
        graceful_shutdown_timeout=grace,
        deployment_config=version,
        # a workflow cached on a worker that died moves to another after this long (default 10 s)
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.sticky_schedule_to_start_seconds),
    )
    ecs_worker = Worker(
        client,
        task_queue=settings.ecs_task_queue,
        activities=[ecs_acts.start_charger_task, ecs_acts.wait_tasks_running, ecs_acts.stop_location_tasks],
        max_concurrent_activities=50,
        max_task_queue_activities_per_second=settings.ecs_activities_per_second,
        graceful_shutdown_timeout=grace,
        deployment_config=version,
    )
    # Pushes to eMSPs: their own queue and slots, so a slow or dead Receiver (each attempt up to
    # `ocpi_push_attempt_timeout_seconds`) never takes the slots provisioning needs. The main
    # worker keeps the activity too, for push runs started before they named this queue.
    push_worker = Worker(
        client,
        task_queue=settings.ocpi_push_task_queue,
        activities=[ocpi.push_location],
        max_concurrent_activities=settings.ocpi_push_max_concurrent,
        graceful_shutdown_timeout=grace,
        deployment_config=version,
    )
    return [main, ecs_worker, push_worker]
