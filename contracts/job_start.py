"""How a job's workflow is started, by the API (after its commit) and by the reconciler (when the
API died before it could): one place, so a reconciled job runs exactly as an accepted one (its
settings, its priority and fairness key, its search attributes)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from contracts.payloads import BulkCreateInput, Tuning
from contracts.temporal import CPO_ID, JOB_STATUS, bulk_priority
from contracts.vocabulary import JobStatus

if TYPE_CHECKING:
    from settings import Settings

BULK_CREATE_WORKFLOW = "BulkCreateLocations"  # workflows.bulk_create.BulkCreateLocations


def job_tuning(settings: Settings) -> Tuning:
    """The workflow shape a job keeps for its whole life, fixed from the settings as it starts."""
    return Tuning(
        window=settings.child_window,
        children_per_run=settings.children_per_run,
        activity_max_attempts=settings.activity_max_attempts,
        activity_max_interval_seconds=settings.activity_max_interval_seconds,
        task_running_timeout_seconds=settings.task_running_timeout_seconds,
        ecs_task_queue=settings.ecs_task_queue,
        ecs_local_starts=settings.ecs_activities_per_second is None,
        activity_timeout_seconds=settings.activity_timeout_seconds,
        workflow_task_timeout_seconds=settings.workflow_task_timeout_seconds,
        callback_max_interval_seconds=settings.callback_max_interval_seconds,
        callback_delivery_seconds=settings.callback_delivery_seconds,
    )


async def start_job(
    client: Client, settings: Settings, job_id: str, cpo_id: int, total: int, started_by: str
) -> WorkflowHandle[Any, Any]:
    """Start the job's workflow (ID = job id); a start that meets a running one is that one, a
    closed one raises `WorkflowAlreadyStartedError`."""
    return await client.start_workflow(
        BULK_CREATE_WORKFLOW,
        BulkCreateInput(job_id=job_id, cpo_id=cpo_id, total=total, tuning=job_tuning(settings)),
        id=job_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(CPO_ID, str(cpo_id)),
                SearchAttributePair(JOB_STATUS, JobStatus.PROVISIONING.value),
            ]
        ),
        static_summary=f"Bulk-create {total} location(s) for CPO {cpo_id}",
        static_details=f"job `{job_id}`, started by {started_by}; per-location input in `ocpp.job_locations`",
        priority=bulk_priority(cpo_id),
        task_timeout=timedelta(seconds=settings.workflow_task_timeout_seconds),
        rpc_timeout=timedelta(seconds=5),
    )
