"""ECS faults: an answer lost, a StopTask failing mid-compensation, ECS away longer than the retry
budget, throttling and drops, a permanent error."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.service import RPCError

from contracts import ids
from contracts.temporal import connect
from tests.fault_proxy import Fault
from tests.faults.stack import (
    JOB_SIZE,
    FaultStack,
    Job,
    api_with,
    check_books,
    check_small,
    marker,
    running_of,
    small_job,
)
from tests.helpers import eventually

pytestmark = pytest.mark.faults


async def test_run_task_answer_lost(stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine) -> None:
    """RunTask reaches moto (a task starts) and its answer is lost on the way back; moto, unlike
    ECS, ignores clientToken, so every re-send starts one more task. Location 0: one answer lost,
    botocore re-sends within the attempt. Location 1: every send of the first attempt lost, so
    Temporal retries the activity, which adopts a live task. One task per charger in the end."""
    assert stack.proxy is not None
    proxy = stack.proxy
    chargers = [1, 1, 1]
    faults: list[Fault] = []

    def arm(cpo_id: str) -> None:
        faults.append(
            proxy.arm(Fault("RunTask", "lose_response", remaining=1, body_contains=marker("LOST", cpo_id, 0)))
        )
        faults.append(
            proxy.arm(Fault("RunTask", "lose_response", remaining=4, body_contains=marker("LOST", cpo_id, 1)))
        )

    job = await small_job(api, "LOST", chargers, arm)
    result = await job.wait_end(stack)
    assert result["status"] == "READY", result["error"]
    assert [f.injected for f in faults] == [1, 4]  # 1 and 4 tasks started whose answer never came
    assert [running_of(stack, job, i, 1) for i in range(len(chargers))] == [[1]] * len(chargers)
    await check_small(stack, db, job, result, chargers, "RunTask answers lost")


async def test_stop_task_failing_during_compensation(
    stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """Location 0's second charger is refused for good after its first one started; while the
    location compensates, StopTask fails (5xx) for a while: compensation retries until its task
    is stopped and its rows are gone."""
    assert stack.proxy is not None
    proxy = stack.proxy
    chargers = [2, 1, 1, 1]
    stop_errors = proxy.arm(Fault("StopTask", "server_error", remaining=6))

    def arm(cpo_id: str) -> None:
        proxy.arm(Fault("RunTask", "invalid_parameter", body_contains=marker("STOPF", cpo_id, 0, 1)))

    job = await small_job(api, "STOPF", chargers, arm)
    result = await job.wait_end(stack)
    assert result["status"] == "FAILED"
    doomed = result["results"]["locations"][0]
    assert (doomed["status"], doomed["error"]["code"]) == ("FAILED", "ECS_INVALID_PARAMETER")
    assert stop_errors.injected == 6  # more than botocore's 4 sends: Temporal retried the stop
    assert running_of(stack, job, 0, 2) == [0, 0]
    await check_small(stack, db, job, result, chargers, "StopTask failing during compensation")


async def test_ecs_unreachable_longer_than_the_retry_budget(stack: FaultStack, db: AsyncEngine) -> None:
    """Every ECS call is dropped for longer than the activity retry budget (2 attempts here):
    the locations that were starting end FAILED with ECS_UNAVAILABLE (retryable) once their
    compensation, which retries without limit, gets through; the others go READY after."""
    assert stack.proxy is not None and stack.settings is not None
    proxy = stack.proxy
    chargers = [1, 1, 1, 1]
    async with api_with(stack, child_window=2, activity_max_attempts=2) as small_budget:
        outage = [
            proxy.arm(Fault(action, "drop"))
            for action in ("RunTask", "ListTasks", "DescribeTasks", "StopTask")
        ]
        job = await small_job(small_budget, "DOWN", chargers)
        temporal = await connect(stack.settings)

        async def compensating() -> bool:
            handles = [temporal.get_workflow_handle(ids.provision_workflow_id(job.job_id, i)) for i in (0, 1)]
            try:
                steps = [await handle.query("step", rpc_timeout=timedelta(seconds=5)) for handle in handles]
            except RPCError:  # not started yet
                return False
            return all(str(step).startswith("compensating") for step in steps)

        await eventually(compensating, "the first two locations' retry budget", timeout=90, every=0.2)
        for fault in outage:  # ECS is back
            fault.remaining = 0
        result = await job.wait_end(stack)
    print(f"\n[ECS outage] calls dropped per action: {[f.injected for f in outage]}")
    assert result["status"] == "FAILED"
    states = [(loc["status"], (loc["error"] or {}).get("code")) for loc in result["results"]["locations"]]
    assert states[:2] == [("FAILED", "ECS_UNAVAILABLE")] * 2
    assert states[2:] == [("READY", None)] * 2
    assert result["results"]["locations"][0]["error"]["retryable"] is True
    await check_small(stack, db, job, result, chargers, "ECS unreachable beyond the retry budget")


async def test_ecs_throttling_errors_and_drops(
    stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine
) -> None:
    assert stack.proxy is not None
    faults = [
        stack.proxy.arm(Fault("RunTask", "throttle", probability=0.20)),
        stack.proxy.arm(Fault("RunTask", "server_error", probability=0.05)),
        stack.proxy.arm(Fault("ListTasks", "drop", probability=0.05)),
        stack.proxy.arm(Fault("DescribeTasks", "throttle", probability=0.10)),
    ]
    job = await Job.submit(api, "THRT")
    result = await job.wait_end(stack)
    injected = [f.injected for f in faults]
    print(f"\n[ECS faults] injected throttle/500/drop/describe-throttle: {injected}")
    assert result["status"] == "READY", result["error"]
    assert injected[0] >= 20  # ~20% of 200+ RunTask calls
    await check_books(stack, db, job, result, "20% ECS throttling + 5xx + drops")


async def test_one_permanent_ecs_error(stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine) -> None:
    assert stack.proxy is not None
    doomed = 57
    job_holder: list[Job] = []
    # arm before submitting: the identity embeds the CPO id, so match on the location's index suffix
    fault = stack.proxy.arm(Fault("RunTask", "invalid_parameter", body_contains=f'-{doomed}"'))
    job = await Job.submit(api, "PERM")
    job_holder.append(job)
    result = await job.wait_end(stack)
    assert fault.injected == 1
    assert result["status"] == "FAILED"
    failed = [loc for loc in result["results"]["locations"] if loc["status"] != "READY"]
    assert [loc["index"] for loc in failed] == [doomed]
    assert failed[0]["error"] == {
        "code": "ECS_INVALID_PARAMETER",
        "retryable": False,
        "message": failed[0]["error"]["message"],
    }
    assert result["progress"]["succeeded"] == JOB_SIZE - 1
    await check_books(stack, db, job, result, "one permanent ECS error")
