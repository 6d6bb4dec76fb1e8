"""The Temporal Schedule of the job reconciler, created (or brought up to date) by every worker at
start: idempotent, so any number of replicas may do it at once."""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from contracts.payloads import ReconcileInput
from settings import Settings
from workflows.reconcile import ReconcileJobs

log = logging.getLogger("worker.schedules")
RECONCILE_SCHEDULE_ID = "ocpplab-reconcile-jobs"


def reconcile_schedule(settings: Settings) -> Schedule:
    every = timedelta(seconds=settings.reconcile_interval_seconds)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcileJobs.run,
            ReconcileInput(grace_seconds=settings.reconcile_grace_seconds),
            id="ocpplab-reconcile-jobs-run",
            task_queue=settings.task_queue,
            execution_timeout=timedelta(minutes=10),
            static_summary="repair jobs stuck PROVISIONING",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # one run at a time; after an outage, one catch-up run rather than one per missed slot
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every * 2),
    )


async def ensure_reconcile_schedule(client: Client, settings: Settings) -> bool:
    """Create the schedule, or update it to these settings. A failure (a namespace that refuses
    schedules to this worker's credentials) is logged, not fatal: the workers still run."""
    schedule = reconcile_schedule(settings)
    try:
        try:
            await client.create_schedule(RECONCILE_SCHEDULE_ID, schedule)
            log.info(
                "created schedule %s (every %ss)", RECONCILE_SCHEDULE_ID, settings.reconcile_interval_seconds
            )
        except ScheduleAlreadyRunningError:

            def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=schedule)

            await client.get_schedule_handle(RECONCILE_SCHEDULE_ID).update(update)
    except Exception:
        log.exception(
            "could not create or update schedule %s: jobs stuck PROVISIONING will not be "
            "repaired until a worker can",
            RECONCILE_SCHEDULE_ID,
        )
        return False
    return True
