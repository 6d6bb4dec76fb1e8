"""Every activity run twice leaves the same rows and the same single ECS task.

The activities run outside any workflow (Temporal's ActivityEnvironment) against the real
PostgreSQL and moto, on the input rows a real POST wrote.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.ecs_client import ecs_client, secrets_client
from activities.ecs_tasks import EcsTaskActivities
from activities.job_state import JobStateActivities
from activities.location_rows import LocationRowsActivities
from contracts.job_start import job_tuning
from contracts.payloads import (
    ActivateInput,
    ChargerTaskInput,
    LocationOutcome,
    ProvisionInput,
    StopTasksInput,
    WaitTasksInput,
)
from contracts.vocabulary import JobStatus
from db.engine import make_sessionmaker
from settings import Settings
from tests.helpers import (
    all_tasks_started_by,
    charger,
    create_cpo,
    expected_counts,
    location,
    running_tasks,
    submit,
    table_counts,
)


async def test_each_activity_twice_gives_the_same_rows_and_one_task(
    app_with: Any,
    admin: dict[str, str],
    temporal: WorkflowEnvironment,
    engine: AsyncEngine,
    settings: Settings,
    ecs: Any,
) -> None:
    async with app_with(task_queue="idempotency-no-worker") as client:
        cpo_id, token = await create_cpo(client, admin)
        accepted = await submit(
            client,
            cpo_id,
            token,
            [
                location("Twice", [charger(f"TWICE-{cpo_id}-1", evses=2), charger(f"TWICE-{cpo_id}-2")]),
            ],
        )
    await temporal.client.get_workflow_handle(accepted["job_id"]).terminate("driven by hand")
    job_id = accepted["job_id"]
    env = ActivityEnvironment()
    retry_env = ActivityEnvironment()
    retry_env.info = dataclasses.replace(retry_env.info, attempt=2)
    sessions = make_sessionmaker(engine)
    rows = LocationRowsActivities(sessions, settings)
    state = JobStateActivities(sessions)
    inp = ProvisionInput(job_id=job_id, cpo_id=int(cpo_id), index=0, tuning=job_tuning(settings))

    first = await env.run(rows.write_location_rows, inp)
    after_first = await table_counts(engine, cpo_id)
    second = await env.run(rows.write_location_rows, inp)
    assert first == second
    assert (
        await table_counts(engine, cpo_id)
        == after_first
        == {
            **expected_counts([[2, 1]]),
            "ecs_tasks": 0,
        }
    )

    async with ecs_client(settings) as ecs_async, secrets_client(settings) as sm:
        tasks_acts = EcsTaskActivities(sessions, ecs_async, settings, sm)
        refs = []
        for planned in first.chargers:
            task_input = ChargerTaskInput(
                job_id, 0, first.location_id, planned.deployment_id, planned.identity
            )
            once = await env.run(tasks_acts.start_charger_task, task_input)
            # RunTask reached ECS but its answer was lost (the worker died before recording it):
            # the deployment says LAUNCHING and no task row exists. The next run is attempt 1
            # again when RunTask is a local activity replayed on another worker, so the attempt
            # number cannot tell; the LAUNCHING mark makes it look for the live task and adopt it.
            async with engine.begin() as conn:
                await conn.execute(
                    text("DELETE FROM ocpp.ecs_tasks WHERE deployment_id = :d"), {"d": planned.deployment_id}
                )
                await conn.execute(
                    text("UPDATE ocpp.charger_deployments SET state = 'LAUNCHING' WHERE id = :d"),
                    {"d": planned.deployment_id},
                )
            for run_env in (env, retry_env):
                again = await run_env.run(tasks_acts.start_charger_task, task_input)
                assert (again.task_arn, again.last_status) == (once.task_arn, "ADOPTED")
            running = running_tasks(ecs, settings.ecs_cluster, planned.deployment_id)
            assert [t["taskArn"] for t in running] == [once.task_arn]
            assert len(all_tasks_started_by(ecs, settings.ecs_cluster, planned.deployment_id)) == 1
            refs.append(once)
        for _ in range(2):
            await env.run(tasks_acts.wait_tasks_running, WaitTasksInput(first.location_id, refs))
        charger_ids = [c.deployment_id for c in first.chargers]
        for _ in range(2):
            await env.run(rows.activate_location, ActivateInput(job_id, 0, first.location_id, charger_ids))
        assert await table_counts(engine, cpo_id) == expected_counts([[2, 1]])
        async with engine.connect() as conn:
            assert (
                await conn.execute(
                    text("SELECT state, location_id FROM ocpp.job_locations WHERE job_id = :j"), {"j": job_id}
                )
            ).one() == ("READY", first.location_id)

        # the undo path is idempotent too
        stop = StopTasksInput(first.location_id, charger_ids)
        assert await env.run(tasks_acts.stop_location_tasks, stop) == 2
        await env.run(tasks_acts.stop_location_tasks, stop)
        for dep_id in charger_ids:
            assert running_tasks(ecs, settings.ecs_cluster, dep_id) == []
            assert len(all_tasks_started_by(ecs, settings.ecs_cluster, dep_id)) == 1
    assert await env.run(rows.delete_location_rows, first.location_id) == 1
    assert await env.run(rows.delete_location_rows, first.location_id) == 0
    assert await table_counts(engine, cpo_id) == expected_counts([])
    outcome = LocationOutcome(job_id=job_id, index=0, state=JobStatus.FAILED)
    await env.run(state.record_location_outcome, outcome)
    await env.run(state.record_location_outcome, outcome)
    async with engine.connect() as conn:
        assert (
            await conn.execute(
                text("SELECT count(*), min(state) FROM ocpp.job_locations WHERE job_id = :j"), {"j": job_id}
            )
        ).one() == (1, "FAILED")
