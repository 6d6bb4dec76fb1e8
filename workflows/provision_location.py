"""ProvisionLocation: one location's rows, one ECS task per charger, then activation.

On a permanent failure or on cancellation it compensates (stops the tasks it may have started,
deletes the rows it wrote) before it reports the error, so no location is ever half-provisioned.

The two database steps (write the rows, activate) are *local* activities: each is one short
transaction on the worker that already runs the workflow task, recorded as one marker event
instead of three activity events and a workflow-task round trip. A charger-less location is then
one workflow task (7 events instead of 17); the dev server's SQLite writes were the bottleneck.
RunTask is a local activity too unless an ECS rate limit is set (then it runs on its own
rate-limited task queue); waiting for PROVISIONING tasks and stopping them stay regular
activities (they heartbeat, and they are off the happy path on moto).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

from contracts import ids
from contracts.activities import EcsTasks, JobState, LocationRows
from contracts.payloads import (
    ActivateInput,
    ChargerTaskInput,
    LocationOutcome,
    LocationPlan,
    ProvisionInput,
    ProvisionResult,
    StopTasksInput,
    TaskRef,
    WaitTasksInput,
)
from contracts.vocabulary import ErrorCode, ErrorInfo, JobStatus
from workflows.retries import failure_detail, location_error, retry_policy

# On cancellation, wait for an activity to really end before compensating: a RunTask still in
# flight while we stop the tasks would leave one behind.
WAIT = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED


@workflow.defn(name="ProvisionLocation")
class ProvisionLocation:
    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query(description="the step this location is at (also its current details in the Web UI)")
    def step(self) -> str:
        return self._step

    def _at(self, step: str) -> None:
        self._step = step
        workflow.set_current_details(f"**{step}**")  # the Web UI shows it on the workflow's page

    @workflow.run
    async def run(self, inp: ProvisionInput) -> ProvisionResult:
        policy = retry_policy(inp.tuning)
        attempt = timedelta(seconds=inp.tuning.activity_timeout_seconds)
        ecs_queue = inp.tuning.ecs_task_queue
        plan: LocationPlan | None = None
        fallback = ErrorCode.DATABASE_UNAVAILABLE
        try:
            self._at("writing rows")
            plan = await workflow.execute_local_activity_method(
                LocationRows.write_location_rows,
                inp,
                start_to_close_timeout=attempt,
                retry_policy=policy,
                cancellation_type=WAIT,
                summary=f"rows of location {inp.index}",
            )
            fallback = ErrorCode.ECS_UNAVAILABLE
            self._at(f"starting {len(plan.chargers)} charger task(s)")
            starts = [
                self._start(
                    inp,
                    ChargerTaskInput(
                        job_id=inp.job_id,
                        index=inp.index,
                        location_id=plan.location_id,
                        deployment_id=charger.deployment_id,
                        identity=charger.identity,
                    ),
                )
                for charger in plan.chargers
            ]
            # Wait for every start to settle before compensating: a task still being started
            # while we stop the others would be left behind.
            started = await asyncio.gather(*starts, return_exceptions=True)
            failures = [r for r in started if isinstance(r, BaseException)]
            if failures:
                raise failures[0]
            # RunTask usually answers PROVISIONING (real ECS): wait for those. A task that already
            # answered RUNNING (moto) needs no DescribeTasks round.
            tasks = [r for r in started if isinstance(r, TaskRef) and r.last_status != "RUNNING"]
            if tasks:
                self._at("waiting for tasks to run")
                timeout = timedelta(seconds=inp.tuning.task_running_timeout_seconds)
                await workflow.execute_activity_method(
                    EcsTasks.wait_tasks_running,
                    WaitTasksInput(location_id=plan.location_id, tasks=tasks),
                    task_queue=ecs_queue,
                    start_to_close_timeout=timeout,
                    schedule_to_close_timeout=timeout,
                    heartbeat_timeout=timedelta(seconds=30),
                    retry_policy=policy,
                    cancellation_type=WAIT,
                    summary="wait until RUNNING",
                )
            fallback = ErrorCode.DATABASE_UNAVAILABLE
            self._at("activating")
            charger_ids = [c.deployment_id for c in plan.chargers]
            await workflow.execute_local_activity_method(
                LocationRows.activate_location,
                ActivateInput(
                    job_id=inp.job_id, index=inp.index, location_id=plan.location_id, charger_ids=charger_ids
                ),
                start_to_close_timeout=attempt,
                retry_policy=policy,
                cancellation_type=WAIT,
                summary="activate",
            )
            # nothing awaited after activation: a job cancel never undoes a READY location
            # (activation itself tells the CPO's OCPI eMSPs)
            self._at("ready")
            return ProvisionResult(index=inp.index, location_id=plan.location_id, charger_ids=charger_ids)
        except (ActivityError, ApplicationError) as err:
            error = location_error(err, fallback)
            detail = failure_detail(err)
            workflow.logger.warning("location %s failed with %s: %s", inp.index, error.code, detail)
            await self._compensate(inp, plan, error)
            # the tenant reads `error` (a fixed message); the failure's own message keeps the
            # detail for operators in Temporal
            raise ApplicationError(
                f"{error.code}: {detail}", error, type=error.code, non_retryable=True
            ) from err
        except asyncio.CancelledError:
            # Cancelled (job cancel, or the parent closing): undo, then stay cancelled.
            await self._compensate(inp, plan, ErrorInfo.of(ErrorCode.CANCELLED))
            raise

    def _start(self, inp: ProvisionInput, charger: ChargerTaskInput) -> Awaitable[TaskRef]:
        """RunTask for one charger: a local activity when no ECS rate limit applies (no activity
        task through Temporal: the child's whole happy path is then one workflow task), else an
        activity on the rate-limited ECS queue. Either way the activity may run again after a
        crash; it finds the deployment LAUNCHING and adopts the task an earlier run started."""
        attempt = timedelta(seconds=inp.tuning.activity_timeout_seconds)
        policy = retry_policy(inp.tuning)
        summary = f"RunTask {charger.identity}"
        if inp.tuning.ecs_local_starts:
            return workflow.execute_local_activity_method(
                EcsTasks.start_charger_task,
                charger,
                start_to_close_timeout=attempt,
                retry_policy=policy,
                cancellation_type=WAIT,
                summary=summary,
            )
        return workflow.execute_activity_method(
            EcsTasks.start_charger_task,
            charger,
            task_queue=inp.tuning.ecs_task_queue,
            start_to_close_timeout=attempt,
            retry_policy=policy,
            cancellation_type=WAIT,
            summary=summary,
        )

    async def _compensate(self, inp: ProvisionInput, plan: LocationPlan | None, error: ErrorInfo) -> None:
        """Stop what may run, delete what was written, record why. Every step is idempotent and
        retried for as long as it takes: giving up would leave rows or tasks behind."""
        self._at(f"compensating ({error.code})")
        policy = retry_policy(inp.tuning, forever=True)
        attempt = timedelta(seconds=inp.tuning.activity_timeout_seconds)
        # Even with no plan a task may run: local activities of a workflow task that the server
        # then refused (a cancel arrived meanwhile) did their work, but their results are not in
        # the history. The activity also stops what the location's rows list.
        await workflow.execute_activity_method(
            EcsTasks.stop_location_tasks,
            StopTasksInput(
                location_id=ids.location_id(inp.job_id, inp.index),
                deployment_ids=[c.deployment_id for c in plan.chargers] if plan else [],
            ),
            task_queue=inp.tuning.ecs_task_queue,
            start_to_close_timeout=attempt,
            retry_policy=policy,
            summary="compensate: stop tasks",
        )
        # Even with no plan the rows may exist (cancelled after the write committed); the id is
        # derived, and deleting nothing is harmless.
        await workflow.execute_activity_method(
            LocationRows.delete_location_rows,
            ids.location_id(inp.job_id, inp.index),
            start_to_close_timeout=attempt,
            retry_policy=policy,
            summary="compensate: delete rows",
        )
        state = JobStatus.CANCELLED if error.code == ErrorCode.CANCELLED else JobStatus.FAILED
        await workflow.execute_activity_method(
            JobState.record_location_outcome,
            LocationOutcome(job_id=inp.job_id, index=inp.index, state=state, error=error),
            start_to_close_timeout=attempt,
            retry_policy=policy,
            summary=f"record {state.value} ({error.code})",
        )
        self._at(state.value.lower())
