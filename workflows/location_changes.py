"""Changes to one provisioned location, each durable through Temporal.

DecommissionLocation stops the chargers' ECS tasks before it retires the rows (OCPI rows kept as
REMOVED, OCPP rows deleted), so a crash in between never leaves a task running with no row to
find it by. UpdateLocation is one activity, but going through a workflow keeps the rule that only
workers write the ten tables. Both tell the CPO's OCPI eMSPs (see workflows/ocpi_push.py).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from contracts.activities import EcsTasks, LocationChanges
from contracts.ocpi import OcpiActivities
from contracts.payloads import LocationPatch, LocationRef, StopTasksInput
from workflows.ocpi_push import notify_ocpi_partners

STEP = timedelta(seconds=60)
# Removal must finish: retry for as long as it takes, backing off to once a minute.
PERSISTENT = RetryPolicy(maximum_interval=timedelta(seconds=60))


@workflow.defn(name="DecommissionLocation")
class DecommissionLocation:
    @workflow.run
    async def run(self, ref: LocationRef) -> bool:
        """True when the location existed and is now gone; False when there was nothing to do."""
        deployment_ids = await workflow.execute_activity_method(
            LocationChanges.mark_location_decommissioning, ref,
            start_to_close_timeout=STEP, retry_policy=PERSISTENT,
            summary=f"mark {ref.location_id} DECOMMISSIONING",
        )
        if deployment_ids is None:
            return False
        await workflow.execute_activity_method(
            EcsTasks.stop_location_tasks,
            StopTasksInput(location_id=ref.location_id, deployment_ids=deployment_ids),
            task_queue=ref.ecs_task_queue, start_to_close_timeout=STEP, retry_policy=PERSISTENT,
            summary=f"stop {len(deployment_ids)} charger task(s)",
        )
        # OCPI never deletes: the location and its EVSEs stay, REMOVED, for the eMSPs
        await workflow.execute_activity_method(
            OcpiActivities.retire_location, ref.location_id, start_to_close_timeout=STEP,
            retry_policy=PERSISTENT, summary="REMOVED for OCPI; OCPP rows deleted",
        )
        await notify_ocpi_partners(ref.cpo_id, ref.location_id)
        return True


@workflow.defn(name="UpdateLocation")
class UpdateLocation:
    @workflow.run
    async def run(self, patch: LocationPatch) -> bool:
        updated = await workflow.execute_activity_method(
            LocationChanges.update_location_fields, patch, start_to_close_timeout=STEP,
            retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=10)),
            summary=f"update {', '.join(sorted(patch.fields))} of {patch.location_id}",
        )
        if updated:
            await notify_ocpi_partners(patch.cpo_id, patch.location_id, sorted(patch.fields))
        return updated
