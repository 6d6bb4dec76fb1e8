"""BulkCreateLocations: one ProvisionLocation child per location through a bounded window.

The parent's history grows by about four events per child, so after `children_per_run` children
(or when the server suggests it) it lets its window drain and continues as new with its progress.
Draining first matters: children do not follow a continue-as-new, and the parent close policy
would otherwise act on them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import CancelledError, ChildWorkflowError

from workflows.ids import provision_workflow_id
from workflows.provision_location import ProvisionLocation
from workflows.retries import location_error, retry_policy
from workflows.shared import (
    ACT_CANCEL_PENDING_LOCATIONS,
    ACT_FINALIZE_JOB,
    CPO_ID,
    JOB_STATUS,
    WORKFLOW_BULK_CREATE,
    BulkCreateInput,
    JobCounts,
    JobOutcome,
    JobProgress,
    JobStatus,
    LocationError,
    ProvisionInput,
)


@workflow.defn(name=WORKFLOW_BULK_CREATE)
class BulkCreateLocations:
    def __init__(self) -> None:
        self._input: BulkCreateInput | None = None
        self._running: set[int] = set()  # indexes whose child has started and not ended
        self._status = JobStatus.PROVISIONING

    @workflow.query
    def status(self) -> JobProgress:
        inp = self._input
        if inp is None:
            return JobProgress("", self._status, 0, 0, 0, 0, 1)
        failed = inp.failed + inp.cancelled
        return JobProgress(
            inp.job_id, self._status, inp.total, inp.succeeded, failed,
            inp.total - inp.succeeded - failed, inp.runs,
        )

    @workflow.run
    async def run(self, inp: BulkCreateInput) -> JobOutcome:
        self._input = inp
        if inp.runs == 1:
            workflow.upsert_search_attributes(
                [CPO_ID.value_set(str(inp.cpo_id)), JOB_STATUS.value_set(JobStatus.PROVISIONING)]
            )
        window: set[asyncio.Task[None]] = set()
        try:
            await self._fan_out(inp, window)
        except asyncio.CancelledError:
            return await self._cancel(inp, window)
        return await self._finish(inp)

    async def _fan_out(self, inp: BulkCreateInput, window: set[asyncio.Task[None]]) -> None:
        """Keep up to `window` children running; drain and continue-as-new after a run's share."""
        started_this_run = 0
        while inp.next_index < inp.total or window:
            rollover = (
                started_this_run >= inp.tuning.children_per_run
                or workflow.info().is_continue_as_new_suggested()
            )
            while inp.next_index < inp.total and len(window) < inp.tuning.window and not rollover:
                window.add(asyncio.create_task(self._provision(inp, inp.next_index)))
                inp.next_index += 1
                started_this_run += 1
                rollover = started_this_run >= inp.tuning.children_per_run
            if not window:
                break
            done, _ = await workflow.wait(window, return_when=asyncio.FIRST_COMPLETED)
            window.difference_update(done)
            for task in done:
                task.result()  # a child that could not even start must not vanish from the counts
            if rollover and not window and inp.next_index < inp.total:
                inp.runs += 1
                workflow.continue_as_new(inp)

    async def _cancel(self, inp: BulkCreateInput, window: set[asyncio.Task[None]]) -> JobOutcome:
        """Job cancelled: READY locations stay; children in flight are cancelled (each one
        compensates); locations never started are marked CANCELLED. Then the run ends cancelled."""
        self._status = JobStatus.CANCELLED
        # Ask each running child to cancel (children still starting ask themselves, see
        # _provision), then wait for every one to end: only then are the rows final.
        await asyncio.gather(*(self._cancel_child(inp, i) for i in sorted(self._running)))
        if window:
            await workflow.wait(window)
        policy = retry_policy(inp.tuning)
        policy.maximum_attempts = 0
        # The rows are the truth now: every child has recorded its end before wait() returned.
        counts: JobCounts = await workflow.execute_activity(
            ACT_CANCEL_PENDING_LOCATIONS, inp.job_id, result_type=JobCounts,
            start_to_close_timeout=_attempt(inp), retry_policy=policy,
        )
        inp.succeeded, inp.failed, inp.cancelled = counts.ready, counts.failed, counts.cancelled
        outcome = JobOutcome(
            inp.job_id, JobStatus.CANCELLED, counts.ready, counts.failed + counts.cancelled,
            LocationError("CANCELLED", f"the job was cancelled; {counts.ready} of {inp.total} "
                          "locations had been provisioned and stay", True),
        )
        await workflow.execute_activity(
            ACT_FINALIZE_JOB, outcome, start_to_close_timeout=_attempt(inp),
            retry_policy=policy, summary="job CANCELLED",
        )
        workflow.upsert_search_attributes([JOB_STATUS.value_set(JobStatus.CANCELLED)])
        raise asyncio.CancelledError

    @staticmethod
    async def _cancel_child(inp: BulkCreateInput, index: int) -> None:
        try:
            await workflow.get_external_workflow_handle(provision_workflow_id(inp.job_id, index)).cancel()
        except Exception:  # it ended meanwhile: nothing to cancel
            workflow.logger.info("child %s already closed", index)

    async def _provision(self, inp: BulkCreateInput, index: int) -> None:
        """Run one child to its end and count it; a failed child never fails the parent."""
        try:
            handle = await workflow.start_child_workflow(
                ProvisionLocation.run,
                ProvisionInput(inp.job_id, inp.cpo_id, index, inp.tuning),
                id=provision_workflow_id(inp.job_id, index),
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                static_summary=f"location #{index} of job {inp.job_id}",
            )
            self._running.add(index)
            if self._status == JobStatus.CANCELLED:  # the job was cancelled while it started
                await self._cancel_child(inp, index)
            await handle
            inp.succeeded += 1
        except ChildWorkflowError as err:
            if isinstance(err.cause, CancelledError):
                return  # cancelled with the job; the child recorded it
            error = location_error(err, "INTERNAL_ERROR")
            inp.failed += 1
            if error.retryable:
                inp.retryable_failures += 1
            if inp.first_error_code is None:
                inp.first_error_code = error.code
        finally:
            self._running.discard(index)

    async def _finish(self, inp: BulkCreateInput) -> JobOutcome:
        status = JobStatus.READY if inp.failed == 0 else JobStatus.FAILED
        error = None
        if inp.failed:
            error = LocationError(
                code="LOCATIONS_FAILED",
                message=(
                    f"{inp.failed} of {inp.total} locations failed (first: {inp.first_error_code});"
                    " see results.locations[].error"
                ),
                retryable=inp.retryable_failures > 0,
            )
        outcome = JobOutcome(inp.job_id, status, inp.succeeded, inp.failed, error)
        policy = retry_policy(inp.tuning)
        policy.maximum_attempts = 0  # the job row must learn the outcome, however long it takes
        await workflow.execute_activity(
            ACT_FINALIZE_JOB, outcome, start_to_close_timeout=_attempt(inp),
            retry_policy=policy, summary=f"job {status.value}",
        )
        self._status = status
        workflow.upsert_search_attributes([JOB_STATUS.value_set(status)])
        return outcome


def _attempt(inp: BulkCreateInput) -> timedelta:
    return timedelta(seconds=inp.tuning.activity_timeout_seconds)
