"""The job's own rows: a location's outcome on `job_locations`, the job's on `jobs`.

The job row keeps the final status and counts so the status endpoint answers after Temporal's
retention has removed the workflow.
"""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio import activity

from activities import metrics
from contracts import activities as interfaces
from contracts.payloads import JobCounts, JobOutcome, LocationOutcome
from contracts.vocabulary import ErrorCode, ErrorInfo, JobStatus
from db.job_input import count_by_state
from db.models import Job, JobLocation, utcnow

NEVER_STARTED = ErrorInfo.of(ErrorCode.CANCELLED)


class JobStateActivities(interfaces.JobState):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @activity.defn
    async def record_location_outcome(self, outcome: LocationOutcome) -> None:
        async with self.sessions() as session, session.begin():
            before = (
                await session.execute(
                    select(col(JobLocation.state))
                    .where(col(JobLocation.job_id) == outcome.job_id, col(JobLocation.index) == outcome.index)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            await session.execute(
                update(JobLocation)
                .where(col(JobLocation.job_id) == outcome.job_id, col(JobLocation.index) == outcome.index)
                .values(
                    state=outcome.state,
                    location_id=outcome.location_id,
                    charger_ids=outcome.charger_ids,
                    error=asdict(outcome.error) if outcome.error else None,
                    updated_at=utcnow(),
                )
            )
        if before is not None and before != outcome.state:  # once per location, not per retry
            metrics.location_outcome(outcome.state, outcome.error.code if outcome.error else None)

    @activity.defn
    async def cancel_pending_locations(self, job_id: str) -> JobCounts:
        """Locations never started end CANCELLED; returns the job's final counts."""
        async with self.sessions() as session, session.begin():
            cancelled = await session.execute(
                update(JobLocation)
                .where(
                    col(JobLocation.job_id) == job_id,
                    col(JobLocation.state).in_([JobStatus.PENDING, JobStatus.PROVISIONING]),
                )
                .values(state=JobStatus.CANCELLED, updated_at=utcnow(), error=asdict(NEVER_STARTED))
            )
            counts = await count_by_state(session, job_id)
        metrics.location_outcome(JobStatus.CANCELLED, NEVER_STARTED.code, int(cancelled.rowcount or 0))  # type: ignore[attr-defined]
        return counts

    @activity.defn
    async def finalize_job(self, outcome: JobOutcome) -> None:
        now = utcnow()
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Job)
                .where(col(Job.id) == outcome.job_id)
                .values(
                    status=outcome.status,
                    succeeded=outcome.succeeded,
                    failed=outcome.failed,
                    error=asdict(outcome.error) if outcome.error else None,
                    updated_at=now,
                    provisioned_at=now if outcome.status == JobStatus.READY else None,
                )
            )
