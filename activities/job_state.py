"""The job's own rows: a location's outcome on `job_locations`, the job's on `jobs`.

The job row keeps the final status and counts so the status endpoint answers after Temporal's
retention has removed the workflow.
"""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio import activity

from db.models import Job, JobLocation, utcnow
from workflows.shared import (
    ACT_CANCEL_PENDING_LOCATIONS,
    ACT_FINALIZE_JOB,
    ACT_RECORD_LOCATION_OUTCOME,
    JobCounts,
    JobOutcome,
    JobStatus,
    LocationOutcome,
    LocationState,
)


class JobStateActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @activity.defn(name=ACT_RECORD_LOCATION_OUTCOME)
    async def record_location_outcome(self, outcome: LocationOutcome) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(JobLocation)
                .where(col(JobLocation.job_id) == outcome.job_id, col(JobLocation.index) == outcome.index)
                .values(
                    state=outcome.state, location_id=outcome.location_id,
                    charger_ids=outcome.charger_ids,
                    error=asdict(outcome.error) if outcome.error else None, updated_at=utcnow(),
                )
            )

    @activity.defn(name=ACT_CANCEL_PENDING_LOCATIONS)
    async def cancel_pending_locations(self, job_id: str) -> JobCounts:
        """Locations never started end CANCELLED; returns the job's final counts."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(JobLocation)
                .where(col(JobLocation.job_id) == job_id,
                       col(JobLocation.state).in_([LocationState.PENDING, LocationState.PROVISIONING]))
                .values(state=LocationState.CANCELLED, updated_at=utcnow(),
                        error={"code": "CANCELLED", "message": "the job was cancelled before this "
                               "location was provisioned", "retryable": True})
            )
            rows = await session.execute(
                select(col(JobLocation.state), func.count())
                .where(col(JobLocation.job_id) == job_id)
                .group_by(col(JobLocation.state))
            )
            counts = {state: int(n) for state, n in rows.all()}
        return JobCounts(counts.get(LocationState.READY, 0), counts.get(LocationState.FAILED, 0),
                         counts.get(LocationState.CANCELLED, 0))

    @activity.defn(name=ACT_FINALIZE_JOB)
    async def finalize_job(self, outcome: JobOutcome) -> None:
        now = utcnow()
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Job)
                .where(col(Job.id) == outcome.job_id)
                .values(
                    status=outcome.status, succeeded=outcome.succeeded, failed=outcome.failed,
                    error=asdict(outcome.error) if outcome.error else None, updated_at=now,
                    provisioned_at=now if outcome.status == JobStatus.READY else None,
                )
            )
