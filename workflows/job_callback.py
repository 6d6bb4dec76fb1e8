"""JobCompletionCallback: deliver a job's signed completion event, at least once, for a bounded
time. Started (through an activity) by BulkCreateLocations once the job's row holds its outcome; the
job does not wait for it (a receiver may be down for hours)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from contracts.activities import JobCallbacks
from contracts.payloads import CallbackInput


@workflow.defn(name="JobCompletionCallback")
class JobCompletionCallback:
    @workflow.run
    async def run(self, inp: CallbackInput) -> str:
        """The outcome; a delivery given up (deadline passed, or a URL refused) is recorded on the
        job's callback row and ends this workflow normally: the job itself is not affected."""
        try:
            outcome: str = await workflow.execute_activity_method(
                JobCallbacks.deliver_job_callback,
                inp.job_id,
                start_to_close_timeout=timedelta(seconds=inp.attempt_seconds),
                schedule_to_close_timeout=timedelta(seconds=inp.delivery_seconds),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=inp.max_interval_seconds),
                    maximum_attempts=0,
                    non_retryable_error_types=["CALLBACK_REFUSED"],
                ),
                summary="signed POST of the job's completion event",
            )
        except ActivityError as err:
            workflow.logger.warning("callback of job %s given up: %s", inp.job_id, err.cause or err)
            return "given up"
        return outcome
