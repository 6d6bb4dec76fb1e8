"""Changes to one provisioned location, each durable through Temporal.

DecommissionLocation stops the chargers' ECS tasks before it retires the rows (OCPI rows kept as
REMOVED, OCPP rows deleted), so a crash in between never leaves a task running with no row to
find it by. LocationUpdates applies the PATCHes of one location: one workflow per location (ID
`update/{location_id}`), fed by signal-with-start, applies them one at a time in the order
their signals reached it (Temporal's order, not any host's clock), retrying each for as long as
it takes: a change the API has accepted is never given up, and two changes never race. Both tell the
CPO's OCPI eMSPs (see workflows/ocpi_push.py).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from contracts.activities import EcsTasks, LocationChanges
from contracts.ocpi import OcpiActivities
from contracts.payloads import LocationPatch, LocationRef, LocationUpdatesInput, StopTasksInput
from contracts.vocabulary import ErrorCode
from workflows.ocpi_push import notify_ocpi_partners

STEP = timedelta(seconds=60)
# Removal must finish: retry for as long as it takes, backing off to once a minute.
PERSISTENT = RetryPolicy(maximum_interval=timedelta(seconds=60))
# An accepted PATCH is applied however long the database is away: no attempt limit, backing
# off to once a minute; only a change the activity refuses for good (a column a PATCH may not
# change, a value the table cannot hold) is dropped, and that is logged in the worker and Temporal.
APPLY_POLICY = RetryPolicy(
    maximum_interval=timedelta(seconds=60), non_retryable_error_types=[ErrorCode.INVALID_LOCATION.value]
)
# A location's updates workflow ends after this long without a change (the next PATCH starts
# a new one).
IDLE = timedelta(minutes=10)


def updates_workflow_id(location_id: str) -> str:
    """One LocationUpdates workflow per location: its changes are serialized by this ID."""
    return f"update/{location_id}"


@workflow.defn(name="DecommissionLocation")
class DecommissionLocation:
    @workflow.run
    async def run(self, ref: LocationRef) -> bool:
        """True when the location existed and is now gone; False when there was nothing to do."""
        step = timedelta(seconds=ref.step_seconds)
        deployment_ids = await workflow.execute_activity_method(
            LocationChanges.mark_location_decommissioning,
            ref,
            start_to_close_timeout=step,
            retry_policy=PERSISTENT,
            summary=f"mark {ref.location_id} DECOMMISSIONING",
        )
        if deployment_ids is None:
            return False
        await workflow.execute_activity_method(
            EcsTasks.stop_location_tasks,
            StopTasksInput(location_id=ref.location_id, deployment_ids=deployment_ids),
            task_queue=ref.ecs_task_queue,
            start_to_close_timeout=step,
            retry_policy=PERSISTENT,
            summary=f"stop {len(deployment_ids)} charger task(s)",
        )
        # OCPI never deletes: the location and its EVSEs stay, REMOVED, for the eMSPs
        await workflow.execute_activity_method(
            OcpiActivities.retire_location,
            ref.location_id,
            start_to_close_timeout=step,
            retry_policy=PERSISTENT,
            summary="REMOVED for OCPI; OCPP rows deleted",
        )
        await notify_ocpi_partners(ref.cpo_id, ref.location_id)
        return True


@workflow.defn(name="LocationUpdates")
class LocationUpdates:
    """The PATCHes of one location, applied one at a time, in the order their signals arrived.

    Changes arrive by signal (durable in the history as soon as the API's signal-with-start
    returns, worker or not); the API then waits on the `applied` update, which returns once its
    change has been applied (or refused for good). Arrival order is the order the API's calls
    were accepted by Temporal, whatever the clocks of the API hosts say; the activity bounds its
    own transaction within its attempt, so a timed-out attempt cannot commit after the change
    that follows it. Continues as new after `changes_per_run` changes, once nothing is pending,
    so the history stays small."""

    def __init__(self) -> None:
        self._pending: list[LocationPatch] = []
        self._handled = 0

    @workflow.signal
    def change(self, patch: LocationPatch) -> None:
        self._pending.append(patch)

    @workflow.update
    async def applied(self, key: str) -> None:
        """Returns once the change `key` (its change id) is no longer pending. The API signals
        before it asks, so a change that is not pending here has been dealt with already."""
        await workflow.wait_condition(lambda: all(p.key != key for p in self._pending))

    @workflow.query
    def state(self) -> dict[str, int | str]:
        return {
            "pending": len(self._pending),
            "handled_in_this_run": self._handled,
            "next": self._pending[0].key if self._pending else "",
        }

    @workflow.run
    async def run(self, inp: LocationUpdatesInput) -> int:
        """The number of changes this run dealt with (applied, or refused as superseded)."""
        self._pending = inp.pending + self._pending  # the previous run's, then any signalled since
        while True:
            suggested = workflow.info().is_continue_as_new_suggested()
            if self._pending and not suggested:
                await self._apply(self._pending[0], timedelta(seconds=inp.step_seconds))
                continue
            done_its_share = suggested or self._handled >= inp.changes_per_run
            if not self._pending:
                if not done_its_share:
                    try:
                        await workflow.wait_condition(lambda: bool(self._pending), timeout=IDLE)
                        continue
                    except TimeoutError:
                        pass
                # every waiting API call gets its answer before this run ends, unless a
                # change comes in first (then it is applied before anything ends)
                await workflow.wait_condition(lambda: bool(self._pending) or workflow.all_handlers_finished())
                if self._pending:
                    continue
                if not done_its_share:
                    return self._handled  # idle
            workflow.continue_as_new(dataclasses.replace(inp, pending=self._pending))

    async def _apply(self, patch: LocationPatch, step: timedelta) -> None:
        try:
            applied = await workflow.execute_activity_method(
                LocationChanges.update_location_fields,
                patch,
                start_to_close_timeout=step,
                retry_policy=APPLY_POLICY,
                summary=f"{', '.join(sorted(patch.fields))} ({patch.key})",
            )
        except ActivityError as err:
            workflow.logger.error("change %s of %s refused: %s", patch.key, patch.location_id, err)
            applied = False
        self._pending.remove(patch)
        self._handled += 1
        if applied:
            await notify_ocpi_partners(patch.cpo_id, patch.location_id, sorted(patch.fields))


@workflow.defn(name="UpdateLocation")
class UpdateLocation:
    """One PATCH per workflow, as they were applied before LocationUpdates: kept registered only
    so that runs started by an older API finish; nothing starts it any more."""

    @workflow.run
    async def run(self, patch: LocationPatch) -> bool:
        updated = await workflow.execute_activity_method(
            LocationChanges.update_location_fields,
            patch,
            start_to_close_timeout=STEP,
            retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=10)),
            summary=f"update {', '.join(sorted(patch.fields))} of {patch.location_id}",
        )
        if updated:
            await notify_ocpi_partners(patch.cpo_id, patch.location_id, sorted(patch.fields))
        return updated
