"""Locations of a CPO: the durable bulk-create, its job status, and reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from api.bulk_jobs import cancel_and_wait, create_or_reuse_job, job_status, start_job_workflow
from api.deps import CpoDep, SessionDep, SettingsDep, get_temporal
from api.location_changes import apply_patch, decommission, patch_columns
from api.locations_read import get_location, list_page, location_status
from api.normalize import check_identities
from api.problems import ApiError, error_responses
from api.schemas import (
    BulkCreateAccepted,
    BulkCreateRequest,
    DecommissionAccepted,
    JobStatusOut,
    LocationOut,
    LocationPage,
    LocationPatchIn,
    UpdateAccepted,
)
from db.models import Job
from workflows.shared import JobStatus

router = APIRouter(prefix="/ocpi/cpos/{cpo_id}/locations", tags=["Locations"])

JobIdPath = Annotated[str, Path(max_length=64, description="the job_id returned by the bulk-create")]
LocationIdPath = Annotated[str, Path(max_length=36, description="the location's id (loc-…)")]


async def job_of(session: AsyncSession, cpo_id: int | None, job_id: str) -> Job:
    """The job, if it is this CPO's; 404 otherwise (another CPO's job does not leak)."""
    job = await session.get(Job, job_id)
    if job is None or job.cpo_id != cpo_id:
        raise ApiError(404, "JOB_NOT_FOUND", f"no job {job_id} under CPO {cpo_id}")
    return job


async def location_or_404(session: AsyncSession, cpo_id: int, location_id: str) -> LocationOut:
    location = await get_location(session, cpo_id, location_id)
    if location is None:
        raise ApiError(404, "LOCATION_NOT_FOUND", f"no location {location_id} under CPO {cpo_id}")
    return location


async def limit_locations(request: Request, settings: SettingsDep, _: CpoDep) -> None:
    """413 before validating thousands of locations that would be refused anyway (after the
    token and the CPO are checked: an unauthenticated caller learns nothing about limits)."""
    try:
        data = await request.json()
    except ValueError:
        return  # FastAPI answers 400 for a body that is not JSON
    locations = data.get("locations") if isinstance(data, dict) else None
    limit = settings.max_locations_per_request
    if isinstance(locations, list) and len(locations) > limit:
        raise ApiError(413, "TOO_MANY_LOCATIONS",
                       f"{len(locations)} locations in one request; the limit is {limit}")


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulkCreateAccepted,
    responses=error_responses(400, 401, 403, 404, 413, 422, 500, 503),
    summary="Bulk-create OCPI locations (durable)",
    dependencies=[Depends(limit_locations)],
)
async def bulk_create_locations(
    body: BulkCreateRequest,
    cpo: CpoDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="repeat a POST safely: same key, same body, same job"),
    ] = None,
) -> BulkCreateAccepted:
    """Validates every location, writes the job and its locations in one transaction, starts the
    `BulkCreateLocations` workflow (ID = job_id) and answers 202 once it is durably started."""
    assert cpo.id is not None
    cpo_id = cpo.id  # plain int: a rollback (concurrent idempotent retry) expires ORM objects
    await check_identities(session, cpo_id, body.locations)
    client = await get_temporal(request)  # before any row: if Temporal is down, write nothing
    job, created = await create_or_reuse_job(session, cpo_id, body, idempotency_key)
    run_id = await start_job_workflow(client, settings, session, job, created)
    status_url = f"/ocpi/cpos/{cpo_id}/locations/jobs/{job.id}"
    response.headers["Location"] = status_url
    response.headers["Retry-After"] = str(settings.retry_after_seconds)
    return BulkCreateAccepted(job_id=job.id, status=job.status, status_url=status_url,
                              workflow_run_id=run_id)


@router.get(
    "/jobs/{job_id}",
    response_model=JobStatusOut,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Get bulk location-create job status",
)
async def get_job_status(
    job_id: JobIdPath, cpo: CpoDep, session: SessionDep, settings: SettingsDep, request: Request
) -> JobStatusOut:
    """Live progress from the workflow's `status` query while a worker runs; from `describe()`
    and the job's rows when none does (answers within about a second either way)."""
    job = await job_of(session, cpo.id, job_id)
    return await job_status(session, lambda: get_temporal(request), settings, job)


@router.delete(
    "/jobs/{job_id}",
    response_model=JobStatusOut,
    responses={202: {"model": JobStatusOut, "description": "cancellation requested, still running"},
               **error_responses(401, 403, 404, 409, 422, 503)},
    summary="Cancel a bulk location-create job",
)
async def cancel_job(
    job_id: JobIdPath, cpo: CpoDep, session: SessionDep, settings: SettingsDep, request: Request
) -> JobStatusOut | JSONResponse:
    """READY locations stay; locations in flight are compensated (tasks stopped, rows removed);
    the job ends CANCELLED. 200 with the final status once it is, 202 while it gets there.
    Cancelling a cancelled job is harmless; a job that already ended otherwise answers 409."""
    job = await job_of(session, cpo.id, job_id)
    if job.status in (JobStatus.READY, JobStatus.FAILED):
        raise ApiError(409, "JOB_FINISHED", f"job {job_id} already ended {job.status}")
    client = await get_temporal(request)
    if job.status != JobStatus.CANCELLED:
        await cancel_and_wait(client, job_id, settings.sync_wait_seconds)
    await session.refresh(job)
    body = await job_status(session, lambda: get_temporal(request), settings, job)
    if body.status == JobStatus.CANCELLED:
        return body
    return JSONResponse(body.model_dump(mode="json"), status_code=202)


@router.get(
    "",
    response_model=LocationPage,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="List locations in a network",
)
async def list_locations(
    cpo: CpoDep,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="one-based page")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="page size")] = 50,
) -> LocationPage:
    """Oldest first (then by id), so pages are stable while new locations arrive."""
    assert cpo.id is not None
    data, total = await list_page(session, cpo.id, page, limit)
    return LocationPage(data=data, total=total, page=page, limit=limit)


@router.get(
    "/{location_id}",
    response_model=LocationOut,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Get OCPI location",
)
async def read_location(location_id: LocationIdPath, cpo: CpoDep, session: SessionDep) -> LocationOut:
    assert cpo.id is not None
    return await location_or_404(session, cpo.id, location_id)


@router.patch(
    "/{location_id}",
    response_model=LocationOut,
    responses={202: {"model": UpdateAccepted, "description": "accepted; not applied yet"},
               **error_responses(400, 401, 403, 404, 422, 503)},
    summary="Update OCPI location",
)
async def patch_location(
    location_id: LocationIdPath, body: LocationPatchIn, cpo: CpoDep, session: SessionDep,
    settings: SettingsDep, request: Request,
) -> LocationOut | JSONResponse:
    """Only the fields sent change, validated as on create; OCPI `last_updated` moves. Applied by
    the `UpdateLocation` workflow: 200 with the location once applied, 202 if no worker applied
    it within `sync_wait_seconds` (it will be)."""
    assert cpo.id is not None
    cpo_id = cpo.id  # plain int: the rollback below expires ORM objects
    await location_or_404(session, cpo_id, location_id)
    columns = patch_columns(body)
    if columns:
        pending = await apply_patch(await get_temporal(request), settings, cpo_id, location_id, columns)
        if pending is not None:
            return JSONResponse(UpdateAccepted(location_id=location_id, workflow_id=pending).model_dump(),
                                status_code=202)
        await session.rollback()  # read what the worker committed, not this session's snapshot
    return await location_or_404(session, cpo_id, location_id)


@router.delete(
    "/{location_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={202: {"model": DecommissionAccepted, "description": "decommission still running"},
               **error_responses(401, 403, 409, 422, 503)},
    summary="Delete OCPI location",
)
async def delete_location(
    location_id: LocationIdPath, cpo: CpoDep, session: SessionDep, settings: SettingsDep,
    request: Request,
) -> Response:
    """Durable decommission: stop the chargers' ECS tasks, then mark the location and its EVSEs
    REMOVED for the OCPI eMSPs (OCPI never deletes; they are pushed the change) and delete its
    OCPP rows; this API answers 404 for it from then on. Idempotent: deleting a location that
    is (already) gone answers 204 too."""
    assert cpo.id is not None
    status_now = await location_status(session, cpo.id, location_id)
    if status_now is None or status_now == "REMOVED":
        return Response(status_code=204)
    if status_now == "PROVISIONING":
        raise ApiError(409, "LOCATION_PROVISIONING",
                       "the location is still being provisioned; cancel its job or retry when READY")
    pending = await decommission(await get_temporal(request), settings, cpo.id, location_id)
    if pending is not None:
        return JSONResponse(DecommissionAccepted(location_id=location_id, workflow_id=pending).model_dump(),
                            status_code=202)
    return Response(status_code=204)
