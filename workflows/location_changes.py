"""Changes to one provisioned location, each durable through Temporal.

DecommissionLocation stops the chargers' ECS tasks before it retires the rows (OCPI rows kept as
REMOVED, OCPP rows deleted), so a crash in between never leaves a task running with no row to
find it by. UpdateLocation is one activity,
but going through a workflow keeps the rule that only workers write the ten tables.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.ocpi_push import PATCH_ID, OcpiActivities, notify_ocpi_partners
from workflows.shared import (
    ACT_DELETE_LOCATION_ROWS,
    ACT_MARK_DECOMMISSIONING,
    ACT_STOP_LOCATION_TASKS,
    ACT_UPDATE_LOCATION,
    WORKFLOW_DECOMMISSION,
    WORKFLOW_UPDATE,
    LocationPatch,
    LocationRef,
    StopTasksInput,
)

STEP = timedelta(seconds=60)
# Removal must finish: retry for as long as it takes, backing off to once a minute.
PERSISTENT = RetryPolicy(maximum_interval=timedelta(seconds=60))


@workflow.defn(name=WORKFLOW_DECOMMISSION)
class DecommissionLocation:
    @workflow.run
    async def run(self, ref: LocationRef) -> bool:
        """True when the location existed and is now gone; False when there was nothing to do."""
        deployment_ids: list[str] | None = await workflow.execute_activity(
            ACT_MARK_DECOMMISSIONING, ref, result_type=list[str] | None,  # type: ignore[arg-type]  # a union is a valid hint
            start_to_close_timeout=STEP, retry_policy=PERSISTENT,
        )
        if deployment_ids is None:
            return False
        await workflow.execute_activity(
            ACT_STOP_LOCATION_TASKS, StopTasksInput(ref.location_id, deployment_ids),
            task_queue=ref.ecs_task_queue, start_to_close_timeout=STEP, retry_policy=PERSISTENT,
            summary=f"stop {len(deployment_ids)} charger task(s)",
        )
        if not workflow.patched(PATCH_ID):  # a decommission started before OCPI pushes existed
            await workflow.execute_activity(
                ACT_DELETE_LOCATION_ROWS, ref.location_id, start_to_close_timeout=STEP,
                retry_policy=PERSISTENT, summary="delete the location's rows",
            )
            return True
        # OCPI never deletes: the location and its EVSEs stay, REMOVED, for the eMSPs
        await workflow.execute_activity_method(
            OcpiActivities.retire_location, ref.location_id, start_to_close_timeout=STEP,
            retry_policy=PERSISTENT, summary="REMOVED for OCPI; OCPP rows deleted",
        )
        await notify_ocpi_partners(ref.cpo_id, ref.location_id)
        return True


@workflow.defn(name=WORKFLOW_UPDATE)
class UpdateLocation:
    @workflow.run
    async def run(self, patch: LocationPatch) -> bool:
        updated: bool = await workflow.execute_activity(
            ACT_UPDATE_LOCATION, patch, result_type=bool, start_to_close_timeout=STEP,
            retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=10)),
        )
        if updated:
            await notify_ocpi_partners(patch.cpo_id, patch.location_id, sorted(patch.fields))
        return updated
