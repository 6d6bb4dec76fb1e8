"""ProvisionLocation: one location's rows, one ECS task per charger, then activation.

On a permanent failure or on cancellation it compensates (stops the tasks it may have started,
deletes the rows it wrote) before it reports the error, so no location is ever half-provisioned.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

from workflows import ids
from workflows.ocpi_push import notify_ocpi_partners
from workflows.retries import location_error, retry_policy
from workflows.shared import (
    ACT_ACTIVATE_LOCATION,
    ACT_DELETE_LOCATION_ROWS,
    ACT_RECORD_LOCATION_OUTCOME,
    ACT_START_CHARGER_TASK,
    ACT_STOP_LOCATION_TASKS,
    ACT_WAIT_TASKS_RUNNING,
    ACT_WRITE_LOCATION_ROWS,
    WORKFLOW_PROVISION,
    ActivateInput,
    ChargerTaskInput,
    LocationError,
    LocationOutcome,
    LocationPlan,
    LocationState,
    ProvisionInput,
    ProvisionResult,
    StopTasksInput,
    TaskRef,
    WaitTasksInput,
)

# On cancellation, wait for an activity to really end before compensating: a RunTask still in
# flight while we stop the tasks would leave one behind.
WAIT = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED


@workflow.defn(name=WORKFLOW_PROVISION)
class ProvisionLocation:
    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query
    def step(self) -> str:
        return self._step

    @workflow.run
    async def run(self, inp: ProvisionInput) -> ProvisionResult:
        policy = retry_policy(inp.tuning)
        attempt = timedelta(seconds=inp.tuning.activity_timeout_seconds)
        ecs_queue = inp.tuning.ecs_task_queue
        plan: LocationPlan | None = None
        fallback = "DATABASE_UNAVAILABLE"
        try:
            self._step = "writing rows"
            plan = await workflow.execute_activity(
                ACT_WRITE_LOCATION_ROWS, inp, result_type=LocationPlan,
                start_to_close_timeout=attempt, retry_policy=policy, cancellation_type=WAIT,
                summary=f"rows of location {inp.index}",
            )
            fallback = "ECS_UNAVAILABLE"
            self._step = f"starting {len(plan.chargers)} charger task(s)"
            starts = [
                workflow.execute_activity(
                    ACT_START_CHARGER_TASK,
                    ChargerTaskInput(inp.job_id, inp.index, plan.location_id,
                                     charger.deployment_id, charger.identity),
                    result_type=TaskRef, task_queue=ecs_queue,
                    start_to_close_timeout=attempt, retry_policy=policy, cancellation_type=WAIT,
                    summary=f"RunTask {charger.identity}",
                )
                for charger in plan.chargers
            ]
            # Wait for every start to settle before compensating: a task still being started
            # while we stop the others would be left behind.
            started = await asyncio.gather(*starts, return_exceptions=True)
            failures = [r for r in started if isinstance(r, BaseException)]
            if failures:
                raise failures[0]
            tasks = [r for r in started if isinstance(r, TaskRef)]
            if tasks:
                self._step = "waiting for tasks to run"
                timeout = timedelta(seconds=inp.tuning.task_running_timeout_seconds)
                await workflow.execute_activity(
                    ACT_WAIT_TASKS_RUNNING, WaitTasksInput(plan.location_id, tasks),
                    task_queue=ecs_queue, start_to_close_timeout=timeout,
                    schedule_to_close_timeout=timeout, heartbeat_timeout=timedelta(seconds=30),
                    retry_policy=policy, cancellation_type=WAIT, summary="wait until RUNNING",
                )
            fallback = "DATABASE_UNAVAILABLE"
            self._step = "activating"
            charger_ids = [c.deployment_id for c in plan.chargers]
            await workflow.execute_activity(
                ACT_ACTIVATE_LOCATION,
                ActivateInput(inp.job_id, inp.index, plan.location_id, charger_ids),
                start_to_close_timeout=attempt, retry_policy=policy, cancellation_type=WAIT,
            )
            self._step = "ready"
            await notify_ocpi_partners(inp.cpo_id, plan.location_id)  # OCPI: PUT to each eMSP
            return ProvisionResult(inp.index, plan.location_id, charger_ids)
        except (ActivityError, ApplicationError) as err:
            error = location_error(err, fallback)
            await self._compensate(inp, plan, error)
            raise ApplicationError(error.message, error, type=error.code, non_retryable=True) from err
        except asyncio.CancelledError:
            # Cancelled (job cancel, or the parent closing): undo, then stay cancelled.
            error = LocationError("CANCELLED", "the job was cancelled", True)
            await self._compensate(inp, plan, error)
            raise

    async def _compensate(
        self, inp: ProvisionInput, plan: LocationPlan | None, error: LocationError
    ) -> None:
        """Stop what may run, delete what was written, record why. Every step is idempotent."""
        self._step = f"compensating ({error.code})"
        policy = retry_policy(inp.tuning)
        attempt = timedelta(seconds=inp.tuning.activity_timeout_seconds)
        # Keep trying the clean-up for as long as it takes: giving up would leave rows behind.
        policy.maximum_attempts = 0
        if plan is not None:  # no plan: no task was started
            await workflow.execute_activity(
                ACT_STOP_LOCATION_TASKS,
                StopTasksInput(plan.location_id, [c.deployment_id for c in plan.chargers]),
                task_queue=inp.tuning.ecs_task_queue, start_to_close_timeout=attempt,
                retry_policy=policy, summary="compensate: stop tasks",
            )
        # Even with no plan the rows may exist (cancelled after the write committed); the id is
        # derived, and deleting nothing is harmless.
        await workflow.execute_activity(
            ACT_DELETE_LOCATION_ROWS, ids.location_id(inp.job_id, inp.index),
            start_to_close_timeout=attempt, retry_policy=policy,
            summary="compensate: delete rows",
        )
        state = LocationState.CANCELLED if error.code == "CANCELLED" else LocationState.FAILED
        await workflow.execute_activity(
            ACT_RECORD_LOCATION_OUTCOME,
            LocationOutcome(inp.job_id, inp.index, state, None, None, error),
            start_to_close_timeout=attempt, retry_policy=policy,
        )
        self._step = state.value.lower()
