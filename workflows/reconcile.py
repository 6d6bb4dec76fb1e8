"""ReconcileJobs: one run of the job reconciler, started by a Temporal Schedule (worker/schedules.py).

The work is one activity (activities/reconcile.py); a workflow around it lets the Schedule run it
every few seconds with Temporal's retries, its overlap policy and its history in the Web UI.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from contracts.activities import JobReconciler
from contracts.payloads import ReconcileInput, ReconcileReport


@workflow.defn(name="ReconcileJobs")
class ReconcileJobs:
    @workflow.run
    async def run(self, inp: ReconcileInput) -> ReconcileReport:
        return await workflow.execute_activity_method(
            JobReconciler.reconcile_jobs,
            inp,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=10)),
            summary="repair jobs stuck PROVISIONING",
        )
