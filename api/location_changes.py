"""PATCH and DELETE of a location: validated here, applied by a workflow on a worker."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from api.normalize import ocpi_columns
from api.problems import ApiError, FieldError
from api.schemas import LocationPatchIn
from api.workflow_wait import wait_closed
from contracts.payloads import LocationPatch, LocationRef
from contracts.temporal import interactive_priority
from settings import Settings
from workflows.location_changes import DecommissionLocation, UpdateLocation

REQUIRED = {"name", "address", "city", "country", "coordinates", "public", "timezone"}


def patch_columns(body: LocationPatchIn) -> dict[str, Any]:
    """The OCPI columns a PATCH changes, normalized as on create. Only fields sent change, with
    one exception a user expects: new coordinates without a timezone re-derive the timezone."""
    sent = body.model_dump(exclude_unset=True, mode="json")
    nulls = sorted(REQUIRED & {k for k, v in sent.items() if v is None})
    if nulls:
        raise ApiError(422, "VALIDATION_ERROR", f"{', '.join(nulls)} cannot be null", [
            FieldError(field=k, message="this field is required and cannot be null", type="null")
            for k in nulls
        ])
    return ocpi_columns(sent)


async def apply_patch(
    client: Client, settings: Settings, cpo_id: int, location_id: str, columns: dict[str, Any]
) -> str | None:
    """Run UpdateLocation; the workflow id when it did not finish within sync_wait_seconds."""
    workflow_id = f"update/{location_id}/{uuid.uuid4().hex[:12]}"
    handle = await client.start_workflow(
        UpdateLocation.run, LocationPatch(cpo_id=cpo_id, location_id=location_id, fields=columns),
        id=workflow_id,
        task_queue=settings.task_queue, static_summary=f"PATCH {location_id}: {', '.join(columns)}",
        priority=interactive_priority(cpo_id),
        task_timeout=timedelta(seconds=settings.workflow_task_timeout_seconds),
    )
    return None if await wait_closed(handle, settings.sync_wait_seconds) else workflow_id


async def decommission(
    client: Client, settings: Settings, cpo_id: int, location_id: str
) -> str | None:
    """Run DecommissionLocation (one per location at a time); its id if it is still running."""
    workflow_id = f"decommission/{location_id}"
    handle = await client.start_workflow(
        DecommissionLocation.run,
        LocationRef(cpo_id=cpo_id, location_id=location_id, ecs_task_queue=settings.ecs_task_queue),
        id=workflow_id, task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Decommission {location_id}",
        priority=interactive_priority(cpo_id),
        task_timeout=timedelta(seconds=settings.workflow_task_timeout_seconds),
    )
    return None if await wait_closed(handle, settings.sync_wait_seconds) else workflow_id

