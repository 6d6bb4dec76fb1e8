"""Cancelling a running job: READY locations stay, in-flight ones are undone, the job is CANCELLED."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts import ids
from settings import Settings
from tests.fault_proxy import Fault, FaultProxy
from tests.helpers import (
    all_tasks_started_by,
    charger,
    create_cpo,
    expected_counts,
    location,
    running_tasks,
    submit,
    table_counts,
    unique,
)


async def test_cancel_keeps_ready_locations_and_undoes_the_rest(
    app_with: Any,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    ecs: Any,
    settings: Settings,
    fault_proxy: FaultProxy,
    temporal: WorkflowEnvironment,
) -> None:
    slow = unique("SLOW")
    # every RunTask of the slow chargers answers after 12 s: those locations are in flight (a
    # margin wide enough for a loaded box, where the quick ones may take a few seconds)
    fault_proxy.arm(Fault("RunTask", "delay", body_contains=slow, delay_seconds=12))
    async with app_with(child_window=2, sync_wait_seconds=45) as client:
        cpo_id, token = await create_cpo(client, admin)
        quick = [location(f"Quick {i}", [charger(unique("QUICK"))]) for i in range(2)]
        slow_ones = [location(f"Slow {i}", [charger(f"{slow}-{i}")]) for i in range(4)]
        accepted = await submit(client, cpo_id, token, quick + slow_ones)
        status_url = accepted["status_url"]
        # until the two quick ones are READY and their workflows done, and the first two slow
        # ones are in flight (held at RunTask): cancel then finds each location in a known state
        job_id = accepted["job_id"]
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            progress = (await client.get(status_url, headers=token)).json()["progress"]
            states = [await _workflow_status(temporal, f"{job_id}/location-{i}") for i in range(4)]
            if progress["succeeded"] >= 2 and states == ["COMPLETED", "COMPLETED", "RUNNING", "RUNNING"]:
                break
            await asyncio.sleep(0.1)
        assert progress["succeeded"] >= 2, progress
        assert states == ["COMPLETED", "COMPLETED", "RUNNING", "RUNNING"], states
        response = await client.delete(status_url, headers=token)
        assert response.status_code == 200, response.text
        job = response.json()
        again = await client.delete(status_url, headers=token)

    assert job["status"] == "CANCELLED"
    assert job["error"]["code"] == "CANCELLED"
    states = [loc["status"] for loc in job["results"]["locations"]]
    # the quick ones were READY before the cancel and stay; the slow ones were still starting
    assert states[:2] == ["READY", "READY"]
    assert set(states[2:]) == {"CANCELLED"}
    ready = [loc for loc in job["results"]["locations"] if loc["status"] == "READY"]
    assert job["progress"] == {"total": 6, "succeeded": 2, "failed": 4, "in_progress": 0}
    assert job["results"]["location_ids"] == [loc["location_id"] for loc in ready]
    assert again.status_code == 200 and again.json()["status"] == "CANCELLED"
    # the READY ones are intact; nothing of the cancelled ones remains, no task of theirs runs
    assert await table_counts(engine, cpo_id) == expected_counts([[1], [1]])
    for index in range(2, 6):
        dep_id = ids.deployment_id(job_id, index, 0)
        assert running_tasks(ecs, settings.ecs_cluster, dep_id) == []
        assert len(all_tasks_started_by(ecs, settings.ecs_cluster, dep_id)) <= 1
    for loc in ready:
        assert len(running_tasks(ecs, settings.ecs_cluster, loc["charger_ids"][0])) == 1


async def _workflow_status(temporal: WorkflowEnvironment, workflow_id: str) -> str | None:
    try:
        status = (await temporal.client.get_workflow_handle(workflow_id).describe()).status
    except RPCError:  # not started yet
        return None
    return status.name if status else None
