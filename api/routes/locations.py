"""Locations of a CPO: the durable bulk-create, its job status, and reads."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime
from sqlalchemy.ext.asyncio import AsyncSession

from api.bulk_jobs import (
    cancel_and_wait,
    check_cpo_quota,
    create_or_reuse_job,
    create_retry_job,
    job_status,
    list_jobs,
    start_job_workflow,
)
from api.bulk_validation import (
    callback_problems,
    parse_bulk,
    raise_problems,
    read_body,
    read_json,
    valid_body,
)
from api.bulk_validation import dry_run as dry_run_bulk
from api.creation_reads import CreationReads
from api.deps import CpoDep, ReadCacheDep, SessionDep, SettingsDep, TemporalDep, limit_inflight
from api.location_changes import apply_patch, decommission, patch_columns
from api.locations_read import get_location, list_page, location_status
from api.normalize import identity_conflicts, requested_identities
from api.problems import ApiError, error_responses
from api.schemas import (
    BulkCreateAccepted,
    BulkCreateRequest,
    DecommissionAccepted,
    DryRunResult,
    JobPage,
    JobStatusOut,
    LocationOut,
    LocationPage,
    LocationPatchIn,
    UpdateAccepted,
)
from api.state import services
from contracts.vocabulary import JobStatus, LocationStatus
from db.catalog import location_templates
from db.models import Job
from observability.logs import bind as bind_log_context
from settings import Settings

log = logging.getLogger("api.locations")
# The paging of every list route: `?page=1&limit=50`, limit 1-100
PageNumber = Annotated[int, Query(ge=1, le=1_000_000, description="one-based page")]
PageSize = Annotated[int, Query(ge=1, le=100, description="page size")]

router = APIRouter(
    prefix="/ocpi/cpos/{cpo_id}/locations", tags=["Locations"], dependencies=[Depends(limit_inflight)]
)

JobIdPath = Annotated[str, Path(max_length=64, description="the job_id returned by the bulk-create")]
LocationIdPath = Annotated[str, Path(max_length=36, description="the location's id (loc-…)")]


async def job_of(session: AsyncSession, cpo_id: int, job_id: str) -> Job:
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


def check_limits(settings: Settings, locations: int, chargers: int) -> None:
    """413 for a body over the per-request limits (after the token and the CPO are checked: an
    unauthenticated caller learns nothing about limits)."""
    limit = settings.max_locations_per_request
    if locations > limit:
        raise ApiError(
            413, "TOO_MANY_LOCATIONS", f"{locations} locations in one request; the limit is {limit}"
        )
    if chargers > settings.max_chargers_per_request:
        raise ApiError(
            413,
            "TOO_MANY_CHARGERS",
            f"{chargers} chargers in one request; the limit is "
            f"{settings.max_chargers_per_request}: split the locations over several requests",
        )


def check_raw_limits(settings: Settings, data: object) -> None:
    """The limits, on a body that did not validate: before its problems are listed, so a body
    of 50,000 broken locations costs a count, not 50,000 validations."""
    locations = data.get("locations") if isinstance(data, dict) else None
    if isinstance(locations, list):
        check_limits(settings, len(locations), sum(_chargers_of(loc) for loc in locations))


def _chargers_of(loc: object) -> int:
    """Chargers a location of the raw body asks for: explicit ones, or its template's."""
    if not isinstance(loc, dict):
        return 0
    explicit = loc.get("chargers")
    template = location_templates().get(loc["template"]) if isinstance(loc.get("template"), str) else None
    if template is not None:
        return sum(group.count for group in template.charger_groups)
    return len(explicit) if isinstance(explicit, list) else 0


def _chargers_in(body: BulkCreateRequest) -> int:
    templates = location_templates()
    return sum(
        sum(group.count for group in templates[loc.template].charger_groups)
        if loc.template
        else len(loc.chargers or [])
        for loc in body.locations
    )


def _check_new_job(settings: Settings, body: BulkCreateRequest, reads: CreationReads) -> None:
    """The checks a new job must pass (a repeat of a POST with its Idempotency-Key skips them):
    429 past the CPO's quota, 422 naming each charger whose identity repeats in the request,
    exists in the CPO, or belongs to a location of a running job of the CPO with no outcome yet."""
    check_cpo_quota(settings, reads, len(body.locations))
    seen, repeats = requested_identities(enumerate(body.locations))
    raise_problems(repeats + identity_conflicts(reads, seen))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulkCreateAccepted,
    responses={
        200: {"model": DryRunResult, "description": "dry run: every problem, or a summary"},
        **error_responses(400, 401, 403, 404, 413, 415, 422, 429, 500, 503),
    },
    summary="Bulk-create OCPI locations (durable)",
    # the body is parsed by the route (api/bulk_validation.py), so it is declared here
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BulkCreateRequest"}}},
        }
    },
)
async def bulk_create_locations(
    cpo: CpoDep,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="repeat a POST safely: same key, same body, same job"),
    ] = None,
    dry_run: Annotated[
        bool,
        Query(
            description="validate only: 200 with every problem or a summary; nothing is written or started"
        ),
    ] = False,
) -> BulkCreateAccepted | JSONResponse:
    """Validates every location, writes the job and its locations in one transaction, starts the
    `BulkCreateLocations` workflow (ID = job_id) and answers 202 once it is durably started.
    With `?dry_run=true` the same validation runs (limits, fields, charger identities against
    the database and the running jobs, templates) and nothing is written or started."""
    cpo_id = cpo.id
    body = None if dry_run else valid_body(await read_body(request))
    if body is not None:
        check_limits(settings, len(body.locations), _chargers_in(body))
    else:  # a dry run, or a body with problems: every one of them is named
        data = await read_json(request)
        check_raw_limits(settings, data)
        if dry_run:
            result = await dry_run_bulk(session, cpo_id, data)
            return JSONResponse(result.model_dump(mode="json"))
        parsed = parse_bulk(data)
        raise_problems(parsed.problems)
        body = parsed.body
        assert body is not None  # no problems: it parsed
    client = await temporal.get()  # before any row: if Temporal is down, write nothing
    raise_problems(await callback_problems(session, cpo_id, body.callback_url))
    job, created = await create_or_reuse_job(
        session,
        cpo_id,
        body,
        idempotency_key,
        check=lambda reads: _check_new_job(settings, body, reads),
    )
    bind_log_context(job_id=job.id)
    run_id = await start_job_workflow(services(request).job_starts, client, settings, session, job, created)
    log.info("job %s %s: %d location(s)", job.id, "accepted" if created else "repeated", job.total)
    status_url = f"/ocpi/cpos/{cpo_id}/locations/jobs/{job.id}"
    response.headers["Location"] = status_url
    response.headers["Retry-After"] = str(settings.retry_after_seconds)
    return BulkCreateAccepted(job_id=job.id, status=job.status, status_url=status_url, workflow_run_id=run_id)


@router.get(
    "/jobs",
    response_model=JobPage,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="List the CPO's bulk jobs",
)
async def list_cpo_jobs(
    cpo: CpoDep,
    session: SessionDep,
    page: PageNumber = 1,
    limit: PageSize = 50,
    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
    created_after: Annotated[
        AwareDatetime | None,
        Query(description="only jobs created after this instant (RFC 3339, with its offset)"),
    ] = None,
    created_before: Annotated[
        AwareDatetime | None,
        Query(description="only jobs created before this instant (RFC 3339, with its offset)"),
    ] = None,
) -> JobPage:
    """Newest first, from PostgreSQL alone (no Temporal call): each job with its counts, its
    times, the Idempotency-Key it was sent with, the job it retries and the jobs that retry it.
    Registered before `/{location_id}`: a location id is `loc-…`, never `jobs`."""
    return await list_jobs(session, cpo.id, page, limit, status, created_after, created_before)


@router.get(
    "/jobs/{job_id}",
    response_model=JobStatusOut,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Get bulk location-create job status",
)
async def get_job_status(
    job_id: JobIdPath,
    cpo: CpoDep,
    cache: ReadCacheDep,
    request: Request,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="page of `results.locations`")] = 1,
    limit: Annotated[int, Query(ge=1, le=1000, description="locations per page of results")] = 100,
) -> JobStatusOut:
    """Progress from the rows each location's workflow commits (never waits on Temporal or a
    worker, so it answers at once however busy the job is), from memory while fresh enough (see
    api/read_cache.py: at most `status_cache_seconds` old for a job polled often);
    once the job has ended, `results` holds one page of its locations by index (100 by default),
    so a poll stays small."""
    sessions = services(request).sessions

    async def read() -> JobStatusOut:
        # its own session: a background refresh outlives the request's
        async with sessions() as own:
            return await job_status(own, await job_of(own, cpo.id, job_id), page, limit)

    found = await cache.statuses.get((cpo.id, job_id, page, limit), read)
    assert found is not None  # `read` answers a status or raises
    return found


@router.delete(
    "/jobs/{job_id}",
    response_model=JobStatusOut,
    responses={
        202: {"model": JobStatusOut, "description": "cancellation requested, still running"},
        **error_responses(401, 403, 404, 409, 422, 503),
    },
    summary="Cancel a bulk location-create job",
)
async def cancel_job(
    job_id: JobIdPath,
    cpo: CpoDep,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    cache: ReadCacheDep,
    request: Request,
) -> JobStatusOut | JSONResponse:
    """READY locations stay; locations in flight are compensated (tasks stopped, rows removed);
    the job ends CANCELLED. 200 with the final status once it is, 202 while it gets there.
    Cancelling a cancelled job is harmless; a job that already ended otherwise answers 409."""
    job = await job_of(session, cpo.id, job_id)
    if job.status in (JobStatus.READY, JobStatus.FAILED):
        raise ApiError(409, "JOB_FINISHED", f"job {job_id} already ended {job.status}")
    client = await temporal.get()
    if job.status != JobStatus.CANCELLED:
        await session.close()  # no pooled connection is held while we wait on Temporal
        await services(request).job_starts.settled(job_id, settings.sync_wait_seconds)
        await cancel_and_wait(client, settings, job, settings.sync_wait_seconds)
        cache.statuses.forget(job_id)
        job = await job_of(session, cpo.id, job_id)
    body = await job_status(session, job)
    if body.status == JobStatus.CANCELLED:
        return body
    return JSONResponse(body.model_dump(mode="json"), status_code=202)


@router.post(
    "/jobs/{job_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulkCreateAccepted,
    responses=error_responses(401, 403, 404, 409, 422, 429, 503),
    summary="Retry the failed locations of a job",
)
async def retry_job(
    job_id: JobIdPath,
    cpo: CpoDep,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    cache: ReadCacheDep,
    request: Request,
    response: Response,
    all: Annotated[
        bool, Query(description="every FAILED location, not only those whose error.retryable is true")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="repeat a retry safely: same key, same job"),
    ] = None,
) -> BulkCreateAccepted:
    """No body: a new job of the job's FAILED locations (retryable ones by default), each with
    the input stored for it; its results carry each location's `origin_index` (its index in the
    first request). `retry_of` on the new job, `retries` on the original. 409 while the job
    runs; 422 when nothing is left to retry (a location a retry has taken up is not taken again,
    unless that retry failed it too)."""
    original = await job_of(session, cpo.id, job_id)
    if not JobStatus(original.status).terminal:
        raise ApiError(
            409,
            "JOB_RUNNING",
            f"job {job_id} is still {original.status}; retry it once it has ended",
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    client = await temporal.get()  # before any row: if Temporal is down, write nothing
    job, created = await create_retry_job(session, settings, original, all, idempotency_key)
    bind_log_context(job_id=job.id)
    run_id = await start_job_workflow(services(request).job_starts, client, settings, session, job, created)
    cache.statuses.forget(job_id)  # the original's status lists its retries at once
    log.info(
        "job %s %s: retry of %s, %d location(s)",
        job.id,
        "accepted" if created else "repeated",
        job_id,
        job.total,
    )
    status_url = f"/ocpi/cpos/{cpo.id}/locations/jobs/{job.id}"
    response.headers["Location"] = status_url
    response.headers["Retry-After"] = str(settings.retry_after_seconds)
    return BulkCreateAccepted(
        job_id=job.id, status=job.status, status_url=status_url, workflow_run_id=run_id, retry_of=job.retry_of
    )


@router.get(
    "",
    response_model=LocationPage,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="List locations in a network",
)
async def list_locations(
    cpo: CpoDep,
    session: SessionDep,
    page: PageNumber = 1,
    limit: PageSize = 50,
) -> LocationPage:
    """Oldest first (then by id), so pages are stable while new locations arrive."""
    data, total = await list_page(session, cpo.id, page, limit)
    return LocationPage(data=data, total=total, page=page, limit=limit)


@router.get(
    "/{location_id}",
    response_model=LocationOut,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Get OCPI location",
)
async def read_location(location_id: LocationIdPath, cpo: CpoDep, session: SessionDep) -> LocationOut:
    return await location_or_404(session, cpo.id, location_id)


@router.patch(
    "/{location_id}",
    response_model=LocationOut,
    responses={
        202: {"model": UpdateAccepted, "description": "accepted; not applied yet"},
        **error_responses(400, 401, 403, 404, 409, 422, 503),
    },
    summary="Update OCPI location",
)
async def patch_location(
    location_id: LocationIdPath,
    body: LocationPatchIn,
    cpo: CpoDep,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> LocationOut | JSONResponse:
    """Only the fields sent change, validated as on create; OCPI `last_updated` becomes the time
    the change was accepted. Applied by the location's `LocationUpdates` workflow, in the order
    accepted: 200 with the location once applied (or superseded by a newer PATCH), 202 if it was
    not applied within `sync_wait_seconds` (it will be, however long that takes). 409 while the
    location is still being provisioned, as for DELETE: its activation would outdate the change."""
    cpo_id = cpo.id
    current = await location_or_404(session, cpo_id, location_id)
    columns = patch_columns(body)
    if columns and current.status == LocationStatus.PROVISIONING:
        raise ApiError(
            409, "LOCATION_PROVISIONING", "the location is still being provisioned; retry when READY"
        )
    if columns:
        client = await temporal.get()
        await session.close()  # no pooled connection is held while we wait on the workflow
        pending = await apply_patch(client, settings, cpo_id, location_id, columns)
        if pending is not None:
            return JSONResponse(
                UpdateAccepted(location_id=location_id, workflow_id=pending).model_dump(), status_code=202
            )
    return await location_or_404(session, cpo_id, location_id)


@router.delete(
    "/{location_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        202: {"model": DecommissionAccepted, "description": "decommission still running"},
        **error_responses(401, 403, 409, 422, 503),
    },
    summary="Delete OCPI location",
)
async def delete_location(
    location_id: LocationIdPath,
    cpo: CpoDep,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> Response:
    """Durable decommission: stop the chargers' ECS tasks, then mark the location and its EVSEs
    REMOVED for the OCPI eMSPs (OCPI never deletes; they are pushed the change) and delete its
    OCPP rows; this API answers 404 for it from then on. Idempotent: deleting a location that
    is (already) gone answers 204 too."""
    status_now = await location_status(session, cpo.id, location_id)
    if status_now is None or status_now == "REMOVED":
        return Response(status_code=204)
    if status_now == LocationStatus.PROVISIONING:
        raise ApiError(
            409,
            "LOCATION_PROVISIONING",
            "the location is still being provisioned; cancel its job or retry when READY",
        )
    client = await temporal.get()
    await session.close()  # no pooled connection is held while we wait on the workflow
    pending = await decommission(client, settings, cpo.id, location_id)
    if pending is not None:
        return JSONResponse(
            DecommissionAccepted(location_id=location_id, workflow_id=pending).model_dump(), status_code=202
        )
    return Response(status_code=204)
