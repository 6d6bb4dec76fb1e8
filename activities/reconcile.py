"""The job reconciler: a job row still PROVISIONING with no workflow left to end it.

Two ways a job gets there: the API committed the job's rows and died (or timed out waiting on
Temporal) before its workflow started; or the workflow was closed from outside (an operator's
terminate, a failure, a timeout) before it wrote the job's end. For each PROVISIONING job older
than the grace period, the workflow with the job's id is described:

- not found: started, with the same id and the same input as the API would (a start that races
  another one finds it running: `USE_EXISTING`);
- running: nothing to do;
- completed: the outcome it returned is written, as its last activity would have;
- cancelled: its unfinished locations end CANCELLED and the job with them, as its cancel would;
- terminated, failed or timed out: its unfinished locations and the job end FAILED with
  `JOB_INTERRUPTED` (a fixed, tenant-safe message).

A closed workflow is only repaired once it has been closed for the grace period: its children,
asked to cancel when it closed, have had time to compensate and record their own end.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.job_state import JobStateActivities
from contracts import activities as interfaces
from contracts.job_start import start_job
from contracts.payloads import JobOutcome, ReconcileInput, ReconcileReport
from contracts.vocabulary import ErrorCode, ErrorInfo, JobStatus
from db.job_input import count_by_state
from db.models import Job, JobLocation, utcnow
from settings import Settings

INTERRUPTED = ErrorInfo.of(ErrorCode.JOB_INTERRUPTED)
BROKEN = (
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.TIMED_OUT,
)
ALIVE = (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW)


class JobReconcilerActivities(interfaces.JobReconciler):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: Settings, client: Client
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.client = client
        self.job_state = JobStateActivities(sessions)

    @activity.defn
    async def reconcile_jobs(self, inp: ReconcileInput) -> ReconcileReport:
        grace = timedelta(seconds=inp.grace_seconds)
        cutoff = utcnow() - grace  # the database's rows: its clock
        # Temporal's timestamps: the server's clock (the time-skipping test server's runs ahead)
        closed_cutoff = activity.info().started_time.astimezone(UTC) - grace
        async with self.sessions() as session:
            jobs = (
                (
                    await session.execute(
                        select(Job)
                        .where(col(Job.status) == JobStatus.PROVISIONING, col(Job.created_at) <= cutoff)
                        .order_by(col(Job.created_at))
                        .limit(inp.limit)
                    )
                )
                .scalars()
                .all()
            )
        report = ReconcileReport(examined=len(jobs))
        for job in jobs:
            activity.heartbeat(job.id)
            await self._reconcile(job, closed_cutoff, report)
        if report.started or report.failed or report.finalized:
            activity.logger.warning("reconciled jobs: %s", report)
        return report

    async def _reconcile(self, job: Job, closed_cutoff: datetime, report: ReconcileReport) -> None:
        handle = self.client.get_workflow_handle(job.id, result_type=JobOutcome)
        try:
            described = await handle.describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            await self._start(job)
            report.started += 1
            return
        status = described.status
        if status in ALIVE or status is None:
            report.running += 1
            return
        closed = described.close_time
        if closed is not None and closed.astimezone(UTC) > closed_cutoff:
            report.running += 1  # closed only just now: its children may still be recording
            return
        if status == WorkflowExecutionStatus.COMPLETED:
            outcome = await handle.result()
            await self.job_state.finalize_job(outcome)
            report.finalized += 1
        elif status == WorkflowExecutionStatus.CANCELED:
            counts = await self.job_state.cancel_pending_locations(job.id)
            await self.job_state.finalize_job(
                JobOutcome(
                    job_id=job.id,
                    status=JobStatus.CANCELLED,
                    succeeded=counts.ready,
                    failed=counts.ended_badly,
                    error=ErrorInfo.of(
                        ErrorCode.CANCELLED,
                        f"the job was cancelled; {counts.ready} of "
                        f"{job.total} locations had been provisioned and stay",
                    ),
                )
            )
            report.finalized += 1
        elif status in BROKEN:
            await self._interrupted(job)
            activity.logger.warning("job %s: workflow %s, job marked FAILED", job.id, status.name)
            report.failed += 1

    async def _start(self, job: Job) -> None:
        """As the API starts it: same id, same input; a start that meets a running one is that one."""
        try:
            handle = await start_job(
                self.client, self.settings, job.id, job.cpo_id, job.total, "the reconciler"
            )
        except WorkflowAlreadyStartedError:  # it ran and closed meanwhile: the next run looks again
            return
        activity.logger.warning("job %s had no workflow: started it", job.id)
        run_id = handle.first_execution_run_id or handle.result_run_id
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Job).where(col(Job.id) == job.id).values(workflow_run_id=run_id, updated_at=utcnow())
            )

    async def _interrupted(self, job: Job) -> None:
        """The unfinished locations and the job end FAILED with a code that says so."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(JobLocation)
                .where(
                    col(JobLocation.job_id) == job.id,
                    col(JobLocation.state).in_([JobStatus.PENDING, JobStatus.PROVISIONING]),
                )
                .values(state=JobStatus.FAILED, error=asdict(INTERRUPTED), updated_at=utcnow())
            )
            counts = await count_by_state(session, job.id)
        await self.job_state.finalize_job(
            JobOutcome(
                job_id=job.id,
                status=JobStatus.FAILED,
                succeeded=counts.ready,
                failed=counts.ended_badly,
                error=INTERRUPTED,
            )
        )
