"""BulkCreateLocations: one ProvisionLocation child per location through a bounded window.

The parent's history grows by about four events per child, so after `children_per_run` children
(or when the server suggests it) it lets its window drain and continues as new with its progress.
Draining first matters: children do not follow a continue-as-new, and the parent close policy
would otherwise act on them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import CancelledError, ChildWorkflowError

from contracts.activities import JobCallbacks, JobState
from contracts.ids import provision_workflow_id
from contracts.payloads import (
    BulkCreateInput,
    CallbackInput,
    CarriedProgress,
    JobCounts,
    JobOutcome,
    JobProgress,
    ProvisionInput,
)
from contracts.temporal import CPO_ID, ERROR_CODES, JOB_STATUS, interactive_priority
from contracts.vocabulary import ErrorCode, ErrorInfo, JobStatus
from workflows.provision_location import ProvisionLocation
from workflows.retries import location_error, retry_policy


# A versioned worker pins every workflow (worker/versioning.py): a run stays on the build that
# started it, its children too; at each continue-as-new the next run starts on the deployment's
# current version (docs/deploy.md). Not in the decorator: an unversioned worker would refuse it.
@workflow.defn(name="BulkCreateLocations")
class BulkCreateLocations:
    def __init__(self) -> None:
        self._job: BulkCreateInput | None = None
        self._progress = CarriedProgress()  # the run's state, handed on at continue-as-new
        self._running: set[int] = set()  # indexes whose child has started and not ended
        self._status = JobStatus.PROVISIONING

    @workflow.query(description="live counts of the job: READY, failed, in progress, runs of its chain")
    def status(self) -> JobProgress:
        """Live counts of this job (the API answers from the database; this is for operators)."""
        job, done = self._job, self._progress
        if job is None:
            return JobProgress(
                job_id="", status=self._status, total=0, succeeded=0, failed=0, in_progress=0, runs=1
            )
        failed = done.failed + done.cancelled
        return JobProgress(
            job_id=job.job_id,
            status=self._status,
            total=job.total,
            succeeded=done.succeeded,
            failed=failed,
            in_progress=job.total - done.succeeded - failed,
            runs=done.runs,
        )

    @workflow.run
    async def run(self, inp: BulkCreateInput) -> JobOutcome:
        self._job = inp
        self._progress = dataclasses.replace(inp.carried)  # the input stays as it was started
        if self._progress.runs == 1:
            workflow.upsert_search_attributes(
                [CPO_ID.value_set(str(inp.cpo_id)), JOB_STATUS.value_set(JobStatus.PROVISIONING)]
            )
        window: set[asyncio.Task[None]] = set()
        try:
            await self._fan_out(inp, window)
        except asyncio.CancelledError:
            return await self._cancel(inp, window)
        return await self._finish(inp)

    def _show(self) -> None:
        """Current details for the Web UI: the counts, the first error, the run of the chain."""
        job, done = self._job, self._progress
        if job is None:
            return
        failed = done.failed + done.cancelled
        lines = [
            f"**{self._status.value}**: {done.succeeded} READY, {failed} failed or cancelled, "
            f"{job.total - done.succeeded - failed} in progress, of {job.total}",
            f"run {done.runs} of the continue-as-new chain",
        ]
        if done.first_error_code:
            lines.append(f"first error: `{done.first_error_code}`")
        workflow.set_current_details("\n\n".join(lines))

    async def _fan_out(self, job: BulkCreateInput, window: set[asyncio.Task[None]]) -> None:
        """Keep up to `window` children running; drain and continue-as-new after a run's share."""
        progress = self._progress
        started_this_run = 0
        while progress.next_index < job.total or window:
            info = workflow.info()
            rollover = (
                started_this_run >= job.tuning.children_per_run
                or info.is_continue_as_new_suggested()
                # a new version of the workers is current: drain and move to it
                or info.is_target_worker_deployment_version_changed()
            )
            while progress.next_index < job.total and len(window) < job.tuning.window and not rollover:
                window.add(asyncio.create_task(self._provision(job, progress.next_index)))
                progress.next_index += 1
                started_this_run += 1
                rollover = started_this_run >= job.tuning.children_per_run
            if not window:
                break
            self._show()
            done, _ = await workflow.wait(window, return_when=asyncio.FIRST_COMPLETED)
            window.difference_update(done)
            for task in done:
                task.result()  # a child that could not even start must not vanish from the counts
            if rollover and not window and progress.next_index < job.total:
                progress.runs += 1
                versioned = workflow.info().get_current_deployment_version() is not None
                workflow.continue_as_new(
                    dataclasses.replace(job, carried=progress),
                    # the next run starts on the current version, not on this run's pinned one
                    initial_versioning_behavior=workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE
                    if versioned
                    else None,
                )

    async def _cancel(self, job: BulkCreateInput, window: set[asyncio.Task[None]]) -> JobOutcome:
        """Job cancelled: READY locations stay; children in flight are cancelled (each one
        compensates); locations never started are marked CANCELLED. Then the run ends cancelled."""
        self._status = JobStatus.CANCELLED
        self._show()
        # Ask each running child to cancel (children still starting ask themselves, see
        # _provision), then wait for every one to end: only then are the rows final.
        await asyncio.gather(*(self._cancel_child(job, i) for i in sorted(self._running)))
        if window:
            await workflow.wait(window)
        policy = retry_policy(job.tuning, forever=True)
        # The rows are the truth now: every child has recorded its end before wait() returned.
        counts: JobCounts = await workflow.execute_activity_method(
            JobState.cancel_pending_locations,
            job.job_id,
            start_to_close_timeout=_attempt(job),
            retry_policy=policy,
            summary="locations never started: CANCELLED",
            priority=interactive_priority(job.cpo_id),
        )
        progress = self._progress
        progress.succeeded, progress.failed = counts.ready, counts.failed
        progress.cancelled = counts.cancelled
        self._show()  # the final counts, not those of the moment the cancel arrived
        outcome = JobOutcome(
            job_id=job.job_id,
            status=JobStatus.CANCELLED,
            succeeded=counts.ready,
            failed=counts.ended_badly,
            error=ErrorInfo.of(
                ErrorCode.CANCELLED,
                f"the job was cancelled; {counts.ready} of "
                f"{job.total} locations had been provisioned and stay",
            ),
        )
        await workflow.execute_activity_method(
            JobState.finalize_job,
            outcome,
            start_to_close_timeout=_attempt(job),
            retry_policy=policy,
            summary="job CANCELLED",
            priority=interactive_priority(job.cpo_id),
        )
        workflow.upsert_search_attributes([JOB_STATUS.value_set(JobStatus.CANCELLED)])
        await self._start_callback(job)
        raise asyncio.CancelledError

    @staticmethod
    async def _cancel_child(job: BulkCreateInput, index: int) -> None:
        try:
            await workflow.get_external_workflow_handle(provision_workflow_id(job.job_id, index)).cancel()
        except Exception:  # it ended meanwhile: nothing to cancel
            workflow.logger.info("child %s already closed", index)

    async def _provision(self, job: BulkCreateInput, index: int) -> None:
        """Run one child to its end and count it; a failed child never fails the parent."""
        progress = self._progress
        try:
            handle = await workflow.start_child_workflow(
                ProvisionLocation.run,
                ProvisionInput(job_id=job.job_id, cpo_id=job.cpo_id, index=index, tuning=job.tuning),
                id=provision_workflow_id(job.job_id, index),
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                static_summary=f"location #{index} of job {job.job_id}",
                task_timeout=timedelta(seconds=job.tuning.workflow_task_timeout_seconds),
            )
            self._running.add(index)
            if self._status == JobStatus.CANCELLED:  # the job was cancelled while it started
                await self._cancel_child(job, index)
            await handle
            progress.succeeded += 1
        except ChildWorkflowError as err:
            if isinstance(err.cause, CancelledError):
                return  # cancelled with the job; the child recorded it
            error = location_error(err, ErrorCode.INTERNAL_ERROR)
            progress.failed += 1
            if error.retryable:
                progress.resubmittable_failures += 1
            if progress.first_error_code is None:
                progress.first_error_code = error.code
            self._note_error_code(error.code)
        finally:
            self._running.discard(index)

    @staticmethod
    def _note_error_code(code: str) -> None:
        """Add a failed location's code to the job's `ErrorCode` search attribute (each code once;
        the attribute follows the chain across continue-as-new). Patched in: histories recorded
        before it have no such upsert."""
        if not workflow.patched("error-code-search-attribute"):
            return
        codes = list(workflow.info().typed_search_attributes.get(ERROR_CODES) or [])
        if code not in codes:
            workflow.upsert_search_attributes([ERROR_CODES.value_set([*codes, code])])

    async def _finish(self, job: BulkCreateInput) -> JobOutcome:
        progress = self._progress
        status = JobStatus.READY if progress.failed == 0 else JobStatus.FAILED
        error = None
        if progress.failed:
            error = ErrorInfo(
                code=ErrorCode.LOCATIONS_FAILED.value,
                message=(
                    f"{progress.failed} of {job.total} locations failed "
                    f"(first: {progress.first_error_code}); see results.locations[].error"
                ),
                retryable=progress.resubmittable_failures > 0,
            )
        outcome = JobOutcome(
            job_id=job.job_id,
            status=status,
            succeeded=progress.succeeded,
            failed=progress.failed,
            error=error,
        )
        # the job row must learn the outcome, however long it takes
        await workflow.execute_activity_method(
            JobState.finalize_job,
            outcome,
            start_to_close_timeout=_attempt(job),
            retry_policy=retry_policy(job.tuning, forever=True),
            summary=f"job {status.value}",
        )
        self._status = status
        self._show()
        workflow.upsert_search_attributes([JOB_STATUS.value_set(status)])
        await self._start_callback(job)
        return outcome

    @staticmethod
    async def _start_callback(job: BulkCreateInput) -> None:
        """Hand the completion callback to its own workflow once the job's row holds the outcome,
        without waiting for it (a receiver may be down for hours; the job has ended). A workflow
        of its own, started by an activity, not a child: nothing ties it to the job's run. Started for
        every job: whether a callback is due (a callback_url, or the CPO's webhook) is decided by
        its activity when the job ends. Patched in: histories recorded before it start no child."""
        if not workflow.patched("job-completion-callback"):
            return
        await workflow.execute_activity_method(
            JobCallbacks.start_job_callback,
            CallbackInput(
                job_id=job.job_id,
                max_interval_seconds=job.tuning.callback_max_interval_seconds,
                delivery_seconds=job.tuning.callback_delivery_seconds,
                attempt_seconds=CALLBACK_ATTEMPT_SECONDS,
            ),
            start_to_close_timeout=_attempt(job),
            retry_policy=retry_policy(job.tuning, forever=True),
            summary="start the completion callback",
        )


# one delivery attempt, database work included (the HTTP call's own deadline is a setting, shorter)
CALLBACK_ATTEMPT_SECONDS = 60.0


def _attempt(job: BulkCreateInput) -> timedelta:
    return timedelta(seconds=job.tuning.activity_timeout_seconds)
