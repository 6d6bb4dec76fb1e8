"""PATCH and DELETE of a location: validated here, applied by a workflow on a worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.normalize import ocpi_columns
from api.problems import ApiError, FieldError
from api.schemas import LocationPatchIn
from api.workflow_wait import OPEN, wait_closed
from contracts.payloads import LocationPatch, LocationRef, LocationUpdatesInput
from contracts.temporal import interactive_priority
from settings import Settings
from workflows.location_changes import DecommissionLocation, LocationUpdates, updates_workflow_id

REQUIRED = {"name", "address", "city", "country", "coordinates", "public", "timezone"}


def patch_columns(body: LocationPatchIn) -> dict[str, Any]:
    """The OCPI columns a PATCH changes, normalized as on create. Only fields sent change, with
    one exception a user expects: new coordinates without a timezone re-derive the timezone."""
    sent = body.model_dump(exclude_unset=True, mode="json")
    nulls = sorted(REQUIRED & {k for k, v in sent.items() if v is None})
    if nulls:
        raise ApiError(
            422,
            "VALIDATION_ERROR",
            f"{', '.join(nulls)} cannot be null",
            [
                FieldError(field=k, message="this field is required and cannot be null", type="null")
                for k in nulls
            ],
        )
    return ocpi_columns(sent)


async def apply_patch(
    client: Client, settings: Settings, cpo_id: int, location_id: str, columns: dict[str, Any]
) -> str | None:
    """Hand the change to the location's LocationUpdates workflow; None once it is applied (or
    superseded by a newer change), else the workflow id (it will be applied, however long the
    database is away). A signal-with-start, not an update-with-start: the signal is in the
    workflow's history when the call returns, worker or not, while an update is durable only
    once a worker has accepted it, so a 202 could otherwise promise a change Temporal may lose.
    The wait that follows is the `applied` update. Nothing here reads this host's clock: the
    workflow applies changes in the order their signals reach it, and the location's
    last_updated is the time the change commits in PostgreSQL."""
    change_id = uuid.uuid4().hex
    workflow_id = updates_workflow_id(location_id)
    for tries_left in (2, 1, 0):
        try:
            handle = await client.start_workflow(
                LocationUpdates.run,
                LocationUpdatesInput(
                    cpo_id=cpo_id, location_id=location_id, step_seconds=settings.activity_timeout_seconds
                ),
                id=workflow_id,
                task_queue=settings.task_queue,
                start_signal="change",
                start_signal_args=[
                    LocationPatch(cpo_id=cpo_id, location_id=location_id, fields=columns, change_id=change_id)
                ],
                static_summary=f"PATCHes of {location_id}",
                priority=interactive_priority(cpo_id),
                task_timeout=timedelta(seconds=settings.workflow_task_timeout_seconds),
            )
            break
        except WorkflowAlreadyStartedError:
            # two signal-with-starts racing to create the workflow (seen on the time-skipping
            # test server): the workflow exists now, so the next one signals it
            if not tries_left:
                raise
    return None if await wait_applied(handle, change_id, settings.sync_wait_seconds) else workflow_id


async def wait_applied(handle: WorkflowHandle[Any, Any], change_id: str, seconds: float) -> bool:
    """True once the change `change_id` has been dealt with, False after `seconds`. The
    update can fail when the run it reached continues as new or ends; then it is asked again
    (of the run now current) unless the workflow has closed, which it does only with nothing
    pending."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(
                handle.execute_update(LocationUpdates.applied, change_id), timeout=remaining
            )
            return True
        except TimeoutError:
            return False
        except (RPCError, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError):
            description = await handle.describe(rpc_timeout=timedelta(seconds=max(min(remaining, 5.0), 0.5)))
            if description.status not in OPEN:
                return True
            await asyncio.sleep(min(0.1, max(remaining, 0)))


async def decommission(client: Client, settings: Settings, cpo_id: int, location_id: str) -> str | None:
    """Run DecommissionLocation (one per location at a time); its id if it is still running."""
    workflow_id = f"decommission/{location_id}"
    handle = await client.start_workflow(
        DecommissionLocation.run,
        LocationRef(
            cpo_id=cpo_id,
            location_id=location_id,
            ecs_task_queue=settings.ecs_task_queue,
            step_seconds=settings.activity_timeout_seconds,
        ),
        id=workflow_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Decommission {location_id}",
        priority=interactive_priority(cpo_id),
        task_timeout=timedelta(seconds=settings.workflow_task_timeout_seconds),
    )
    return None if await wait_closed(handle, settings.sync_wait_seconds) else workflow_id
