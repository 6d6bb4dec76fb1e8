"""The bulk job: its rows written in one transaction, its workflow started, its status read.

Job input travels through PostgreSQL: the workflow only gets `{job_id, cpo_id, total}`, because a
10,000-location body is bigger than anything Temporal accepts in one payload.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.creation_reads import JOB_CREATION_LOCK, CreationReads, read_for_creation
from api.job_starts import JobStarts, StartRefused
from api.normalize import identity_conflicts, normalized_json
from api.problems import TEMPORAL_DOWN, ApiError
from api.schemas import (
    BulkCreateRequest,
    CallbackStatus,
    JobError,
    JobLocationResult,
    JobPage,
    JobProgressOut,
    JobResults,
    JobStatusOut,
    JobSummary,
)
from api.workflow_wait import wait_closed
from contracts.job_start import start_job
from contracts.vocabulary import JobStatus
from db.job_input import copy_job_locations, count_by_state
from db.models import Job, JobCallback, JobLocation
from settings import Settings

log = logging.getLogger("api")


def new_job_id() -> str:
    """Random: two identical POSTs without an Idempotency-Key are two jobs."""
    return f"job-{uuid.uuid4().hex}"


UNKEYED = "-" * 64  # the request_hash of a job posted without an Idempotency-Key


def request_hash(body: BulkCreateRequest) -> str:
    # without a callback_url the digest is the one of bodies from before that field existed, so an
    # Idempotency-Key repeat across the upgrade still finds its job
    exclude = {"callback_url"} if body.callback_url is None else None
    return hashlib.sha256(body.model_dump_json(exclude=exclude).encode()).hexdigest()


async def find_idempotent(session: AsyncSession, cpo_id: int, key: str, digest: str) -> Job | None:
    job = (
        await session.execute(select(Job).where(col(Job.cpo_id) == cpo_id, col(Job.idempotency_key) == key))
    ).scalar_one_or_none()
    if job is not None and job.request_hash != digest:
        raise ApiError(422, "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used with a different body")
    return job


async def lock_job_creation(session: AsyncSession, cpo_id: int) -> None:
    """One job with explicit chargers created at a time per CPO, from its identity check until
    its rows are committed (a transaction-scoped lock): two POSTs racing with the same charger
    identities cannot both pass the check. Other CPOs, and bodies without explicit chargers
    (template identities are derived from the job), are not held up. (A POST takes it in the
    pipeline of api/creation_reads.py; a retry reads its locations under it first.)"""
    await session.execute(select(func.pg_advisory_xact_lock(JOB_CREATION_LOCK, cpo_id)))


def check_cpo_quota(settings: Settings, reads: CreationReads, locations: int) -> None:
    """429 when the CPO already runs its share: so many jobs, or so many locations queued. A soft
    limit (two racing POSTs may both pass): it exists so one CPO cannot fill the queues for all."""
    running, queued = reads.running_jobs, reads.queued_locations
    retry = {"Retry-After": "30"}
    if running >= settings.max_running_jobs_per_cpo:
        raise ApiError(
            429,
            "TOO_MANY_JOBS",
            f"this CPO already runs {running} jobs (the limit is "
            f"{settings.max_running_jobs_per_cpo}); retry when one has ended",
            headers=retry,
        )
    if queued + locations > settings.max_queued_locations_per_cpo:
        raise ApiError(
            429,
            "TOO_MANY_QUEUED_LOCATIONS",
            f"this CPO's running jobs hold {queued} locations; with {locations} more it would "
            f"pass its limit of {settings.max_queued_locations_per_cpo}; retry when some "
            "have been provisioned",
            headers=retry,
        )


async def create_job_rows(
    session: AsyncSession, cpo_id: int, body: BulkCreateRequest, key: str | None, digest: str
) -> Job:
    """The job row and one `job_locations` row per location, in one transaction."""
    job_id = new_job_id()
    job = Job(
        id=job_id,
        cpo_id=cpo_id,
        status=JobStatus.PROVISIONING,
        total=len(body.locations),
        idempotency_key=key,
        request_hash=digest,
        callback_url=body.callback_url,
    )
    session.add(job)
    await session.flush()
    inputs = (normalized_json(loc, job_id, i) for i, loc in enumerate(body.locations))
    await copy_job_locations(session, job_id, inputs, JobStatus.PENDING, job.created_at)
    await session.commit()
    return job


async def create_or_reuse_job(
    session: AsyncSession,
    cpo_id: int,
    body: BulkCreateRequest,
    key: str | None,
    check: Callable[[CreationReads], None] | None = None,
) -> tuple[Job, bool]:
    """(job, created). With an Idempotency-Key, a repeat (even a concurrent one, even long after
    the job ended) gets the job. `check` (the checks against existing rows: the quota, charger
    identities) runs only when a job is to be created: a repeat of a POST whose job already
    created those rows must not be refused for them."""
    # only a keyed POST is ever compared with another: a body's canonical JSON costs ~40 ms at
    # 10,000 locations, spent on the 202 for nothing when no key can ask for it
    digest = request_hash(body) if key is not None else UNKEYED
    if key is not None:
        existing = await find_idempotent(session, cpo_id, key, digest)
        if existing is not None:
            return existing, False
    identities = {charger.identity for loc in body.locations for charger in loc.chargers or []}
    reads = await read_for_creation(session, cpo_id, identities, lock=bool(identities))
    if identities and key is not None:  # a concurrent repeat may have created the job meanwhile
        existing = await find_idempotent(session, cpo_id, key, digest)
        if existing is not None:
            await session.commit()  # releases the lock
            return existing, False
    if check is not None:
        check(reads)
    try:
        return await create_job_rows(session, cpo_id, body, key, digest), True
    except IntegrityError as err:
        return await _raced(session, cpo_id, key, digest, err), False


async def _raced(
    session: AsyncSession, cpo_id: int, key: str | None, digest: str, conflict: IntegrityError
) -> Job:
    """After a uniqueness conflict on insert: the job a concurrent repeat of the same
    Idempotency-Key created meanwhile; any other conflict is raised again."""
    await session.rollback()
    existing = await find_idempotent(session, cpo_id, key, digest) if key is not None else None
    if existing is None:
        raise conflict
    return existing


async def start_job_workflow(
    starts: JobStarts, client: Client, settings: Settings, session: AsyncSession, job: Job, created: bool
) -> str | None:
    """Start (or find) the job's workflow; its ID is the job id, so a repeat start is harmless.
    A job that has ended is never started again (its row says so; Temporal refuses a duplicate).
    The answer waits for the start at most `job_start_wait_seconds` (api/job_starts.py)."""
    if JobStatus(job.status).terminal:
        return job.workflow_run_id
    try:
        run_id = await starts.start(client, settings, job, settings.job_start_wait_seconds)
    except StartRefused as refused:
        err = refused.error
        if created:  # nothing will run it: do not leave a job that looks alive
            await session.execute(delete(Job).where(col(Job.id) == job.id))
            await session.commit()
        if err.status == RPCStatusCode.UNAVAILABLE:
            log.warning("Temporal unreachable, job %s not started: %s", job.id, err)
            raise ApiError(
                503,
                "TEMPORAL_UNAVAILABLE",
                f"{TEMPORAL_DOWN} (nothing was started)",
                headers={"Retry-After": "5"},
            ) from err
        raise err from refused
    return run_id or job.workflow_run_id


async def cancel_and_wait(client: Client, settings: Settings, job: Job, wait_seconds: float) -> None:
    """Ask Temporal to cancel the job's current run, then give it a moment to wind down. A job
    whose workflow is not started yet (its start went on after the 202 and has not landed, or
    died with its API process) is started first, same id and input, then cancelled: its workflow
    then ends it CANCELLED, so no later start (the reconciler's) runs it after all."""
    handle = client.get_workflow_handle(job.id)
    try:
        await handle.cancel()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        try:
            await start_job(client, settings, job.id, job.cpo_id, job.total, "a cancel")
        except WorkflowAlreadyStartedError:  # closed meanwhile: nothing to cancel
            return
        await handle.cancel()
    await wait_closed(handle, wait_seconds)


async def job_status(session: AsyncSession, job: Job, page: int = 1, limit: int = 100) -> JobStatusOut:
    """Status from PostgreSQL alone: the job row (whose status the workflow's last activity
    writes) and the `job_locations` counts (each child commits its outcome there).

    No Temporal call on the poll path: a query is a workflow task on a worker, and with 20 clients
    polling one job it cost more than the job itself (p99 1.5 s). The workflow's `status` query
    stays for operators (`temporal workflow query --type status`). A job whose workflow was
    terminated by hand keeps its row's PROVISIONING until the reconciler repairs it.
    """
    status = JobStatus(job.status)
    if status.terminal:
        succeeded, failed = job.succeeded, job.failed
    else:
        counts = await count_by_state(session, job.id)
        succeeded, failed = counts.ready, counts.ended_badly
    results = await _results(session, job, page, limit) if status.terminal else None
    error = JobError(**job.error) if job.error else None
    retries = (await retries_of(session, [job.id])).get(job.id, [])
    callback = await session.get(JobCallback, job.id)
    return JobStatusOut(
        job_id=job.id,
        job_type=job.job_type,
        status=status,
        workflow_run_id=job.workflow_run_id,
        error=error,
        progress=JobProgressOut(
            total=job.total,
            succeeded=succeeded,
            failed=failed,
            in_progress=max(job.total - succeeded - failed, 0),
        ),
        results=results,
        provisioned_at=job.provisioned_at,
        created_at=job.created_at,
        updated_at=job.updated_at,
        idempotency_key=job.idempotency_key,
        retry_of=job.retry_of,
        retries=retries,
        callback=None
        if callback is None
        else CallbackStatus(
            url=callback.url,
            event_id=callback.event_id,
            attempts=callback.attempts,
            last_status=callback.last_status,
            last_attempt_at=callback.last_attempt_at,
            delivered_at=callback.delivered_at,
        ),
    )


async def retries_of(session: AsyncSession, job_ids: list[str]) -> dict[str, list[str]]:
    """job id -> ids of the jobs that retried it, oldest first (one query for a page of jobs)."""
    if not job_ids:
        return {}
    rows = await session.execute(
        select(col(Job.retry_of), col(Job.id))
        .where(col(Job.retry_of).in_(job_ids))
        .order_by(col(Job.created_at), col(Job.id))
    )
    found: dict[str, list[str]] = {}
    for original, retry in rows.all():
        if original is not None:
            found.setdefault(original, []).append(retry)
    return found


def ended_at(job: Job) -> datetime | None:
    """When a job ended: its READY time, else the last write of its row (its finalize)."""
    if not JobStatus(job.status).terminal:
        return None
    return job.provisioned_at or job.updated_at


async def list_jobs(
    session: AsyncSession,
    cpo_id: int,
    page: int,
    limit: int,
    status: JobStatus | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> JobPage:
    """A CPO's jobs, newest first (ties by id, so pages are stable), from the jobs table alone:
    `ix_jobs_cpo_created` (or `ix_jobs_cpo_status_created` with a status) serves the page.
    Running jobs' counts come from `job_locations` in one grouped query for the page."""
    where = [col(Job.cpo_id) == cpo_id]
    if status is not None:
        where.append(col(Job.status) == status)
    if created_after is not None:
        where.append(col(Job.created_at) > created_after)
    if created_before is not None:
        where.append(col(Job.created_at) < created_before)
    total = int((await session.execute(select(func.count()).select_from(Job).where(*where))).scalar_one())
    jobs = list(
        (
            await session.execute(
                select(Job)
                .where(*where)
                .order_by(col(Job.created_at).desc(), col(Job.id).desc())
                .offset((page - 1) * limit)
                .limit(limit)
            )
        ).scalars()
    )
    running = [j.id for j in jobs if not JobStatus(j.status).terminal]
    live: dict[str, dict[str, int]] = {}
    if running:
        rows = await session.execute(
            select(col(JobLocation.job_id), col(JobLocation.state), func.count())
            .where(col(JobLocation.job_id).in_(running))
            .group_by(col(JobLocation.job_id), col(JobLocation.state))
        )
        for job_id, state, n in rows.all():
            live.setdefault(job_id, {})[state] = int(n)
    retries = await retries_of(session, [j.id for j in jobs])
    data = []
    for job in jobs:
        if job.id in live or not JobStatus(job.status).terminal:
            states = live.get(job.id, {})
            succeeded = states.get(JobStatus.READY, 0)
            failed = states.get(JobStatus.FAILED, 0) + states.get(JobStatus.CANCELLED, 0)
        else:
            succeeded, failed = job.succeeded, job.failed
        data.append(
            JobSummary(
                job_id=job.id,
                status=JobStatus(job.status),
                progress=JobProgressOut(
                    total=job.total,
                    succeeded=succeeded,
                    failed=failed,
                    in_progress=max(job.total - succeeded - failed, 0),
                ),
                created_at=job.created_at,
                ended_at=ended_at(job),
                idempotency_key=job.idempotency_key,
                retry_of=job.retry_of,
                retries=retries.get(job.id, []),
            )
        )
    return JobPage(data=data, total=total, page=page, limit=limit)


async def _results(session: AsyncSession, job: Job, page: int, limit: int) -> JobResults:
    first = (page - 1) * limit
    rows = (
        await session.execute(
            select(
                col(JobLocation.index),
                col(JobLocation.origin_index),
                col(JobLocation.input)["name"].astext,
                col(JobLocation.state),
                col(JobLocation.location_id),
                col(JobLocation.charger_ids),
                col(JobLocation.error),
            )
            .where(
                col(JobLocation.job_id) == job.id,
                col(JobLocation.index) >= first,
                col(JobLocation.index) < first + limit,
            )
            .order_by(col(JobLocation.index))
        )
    ).all()
    locations = [
        JobLocationResult(
            index=index,
            origin_index=index if origin is None else origin,
            name=name,
            status=state,
            location_id=location_id if state == JobStatus.READY else None,
            charger_ids=list(charger_ids or []) if state == JobStatus.READY else [],
            error=JobError(**error) if error else None,
        )
        for index, origin, name, state, location_id, charger_ids, error in rows
    ]
    return JobResults(
        location_ids=[loc.location_id for loc in locations if loc.location_id],
        locations=locations,
        page=page,
        limit=limit,
        total=job.total,
    )


# The FAILED locations of a job that a retry takes: retryable ones unless `everything`, and none
# that a retry of the job has already taken up (one that did not end FAILED or CANCELLED), so a
# second retry never provisions a location twice. `origin` is the index in the first request.
RETRYABLE_LOCATIONS = text("""
    SELECT jl.index, coalesce(jl.origin_index, jl.index) AS origin, jl.input
    FROM ocpp.job_locations jl
    WHERE jl.job_id = :job AND jl.state = :failed
      AND (:everything OR coalesce((jl.error->>'retryable')::boolean, false))
      AND NOT EXISTS (
        SELECT 1 FROM ocpp.jobs r JOIN ocpp.job_locations rl ON rl.job_id = r.id
        WHERE r.retry_of = jl.job_id AND rl.origin_index = coalesce(jl.origin_index, jl.index)
          AND rl.state NOT IN (:failed, :cancelled))
    ORDER BY jl.index""")


def retry_hash(job_id: str, everything: bool) -> str:
    """The 'body' of a retry, for its Idempotency-Key: which job, which locations."""
    return hashlib.sha256(f"retry:{job_id}:{'all' if everything else 'retryable'}".encode()).hexdigest()


async def create_retry_job(
    session: AsyncSession, settings: Settings, original: Job, everything: bool, key: str | None
) -> tuple[Job, bool]:
    """(job, created): a new job of `original`'s FAILED locations, their stored input re-used.

    Each keeps its index in the first request as `origin_index`; its own `index` is dense
    (0..n-1) because the workflow fans out by index and the deterministic ids derive from
    (job_id, index), which stay unique as the job id is new. The failed locations' rows were
    compensated, so their charger identities are free, unless something took them since: the
    same identity check as a POST's, under the same lock, answers 422 then."""
    # plain values: a rollback below expires the ORM row
    original_id, cpo_id, callback_url = original.id, original.cpo_id, original.callback_url
    digest = retry_hash(original_id, everything)
    if key is not None:
        existing = await find_idempotent(session, cpo_id, key, digest)
        if existing is not None:
            return existing, False
    await lock_job_creation(session, cpo_id)
    if key is not None:
        existing = await find_idempotent(session, cpo_id, key, digest)
        if existing is not None:
            await session.commit()
            return existing, False
    rows = (
        await session.execute(
            RETRYABLE_LOCATIONS,
            {
                "job": original_id,
                "failed": JobStatus.FAILED.value,
                "cancelled": JobStatus.CANCELLED.value,
                "everything": everything,
            },
        )
    ).all()
    if not rows:
        await session.rollback()
        which = "FAILED" if everything else "retryable FAILED"
        raise ApiError(
            422,
            "NOTHING_TO_RETRY",
            f"job {original_id} has no {which} location left to retry"
            + ("" if everything else " (?all=true retries the others too)"),
        )
    seen = {
        charger["identity"]: f"locations[{origin}].chargers[{j}].identity"
        for _index, origin, data in rows
        for j, charger in enumerate(data.get("chargers") or [])
    }
    reads = await read_for_creation(session, cpo_id, seen, lock=False)  # the lock is held
    check_cpo_quota(settings, reads, len(rows))
    conflicts = identity_conflicts(reads, seen)
    if conflicts:
        await session.rollback()
        raise ApiError(
            422,
            "VALIDATION_ERROR",
            f"{len(conflicts)} charger identit(ies) taken since: "
            + ", ".join(e.field for e in conflicts[:10]),
            conflicts,
        )
    job = Job(
        id=new_job_id(),
        cpo_id=cpo_id,
        status=JobStatus.PROVISIONING,
        total=len(rows),
        idempotency_key=key,
        request_hash=digest,
        retry_of=original_id,
        callback_url=callback_url,
    )
    session.add(job)
    try:
        await session.flush()
        await session.execute(
            insert(JobLocation),
            [
                {
                    "job_id": job.id,
                    "index": n,
                    "input": data,
                    "state": JobStatus.PENDING,
                    "updated_at": job.created_at,
                    "origin_index": origin,
                }
                for n, (_index, origin, data) in enumerate(rows)
            ],
        )
        await session.commit()
    except IntegrityError as err:
        return await _raced(session, cpo_id, key, digest, err), False
    return job, True
