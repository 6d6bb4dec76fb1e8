"""The guards of the hot activities' single-statement and pipelined writes (db/pipelined.py):
a charger identity already used in the CPO's network fails the location for good and leaves none
of its rows; a start finds the compensation's STOPPING mark and does not start (or undoes what it
started); a replayed activation stamps nothing twice.

The activities run outside any workflow (Temporal's ActivityEnvironment) against the real
PostgreSQL and moto, on the input rows real POSTs wrote.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.ecs_client import ecs_client, secrets_client
from activities.ecs_tasks import EcsTaskActivities
from activities.location_rows import LocationRowsActivities
from contracts.job_start import job_tuning
from contracts.payloads import ActivateInput, ChargerTaskInput, ProvisionInput
from contracts.vocabulary import ErrorCode
from db.engine import make_sessionmaker
from db.job_input import NormalizedLocation
from db.models import PartnerOperation
from settings import Settings
from tests.helpers import all_tasks_started_by, charger, create_cpo, location, running_tasks, submit


async def test_identity_conflict_fence_and_replayed_activation(
    app_with: Any,
    admin: dict[str, str],
    temporal: WorkflowEnvironment,
    engine: AsyncEngine,
    settings: Settings,
    ecs: Any,
) -> None:
    async with app_with(task_queue="hot-path-no-worker") as client:
        cpo_id, token = await create_cpo(client, admin)
        shared = f"GUARD-{cpo_id}-SHARED"
        first_job = await submit(
            client, cpo_id, token, [location("Guard A", [charger(shared), charger(f"GUARD-{cpo_id}-A2")])]
        )
        second_job = await submit(
            client, cpo_id, token, [location("Guard B", [charger(f"GUARD-{cpo_id}-B1")])]
        )
    # the API refuses an identity a running job provisions; a race past that check (two POSTs
    # at once) leaves two jobs naming one identity: the second to write its rows meets the key
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE ocpp.job_locations SET input = jsonb_set(input, '{chargers,0,identity}', "
                "to_jsonb(CAST(:identity AS text))) WHERE job_id = :j"
            ),
            {"identity": shared, "j": second_job["job_id"]},
        )
    for accepted in (first_job, second_job):
        await temporal.client.get_workflow_handle(accepted["job_id"]).terminate("driven by hand")
    env = ActivityEnvironment()
    sessions = make_sessionmaker(engine)
    rows = LocationRowsActivities(sessions, settings)
    tuning = job_tuning(settings)
    first_input = ProvisionInput(job_id=first_job["job_id"], cpo_id=int(cpo_id), index=0, tuning=tuning)
    plan = await env.run(rows.write_location_rows, first_input)
    # the rows as written are the rows as built (types, time zones, JSONB), table by table
    async with engine.connect() as conn:
        found = (
            await conn.execute(
                text(
                    "SELECT input, p.id, p.name, p.country_code, p.party_id FROM ocpp.job_locations jl"
                    " JOIN ocpp.partner_operations p ON p.id = :cpo WHERE jl.job_id = :j"
                ),
                {"cpo": int(cpo_id), "j": first_job["job_id"]},
            )
        ).one()
        built = rows._rows(
            first_input,
            NormalizedLocation.model_validate(found[0]),
            PartnerOperation(id=found[1], name=found[2], country_code=found[3], party_id=found[4]),
            plan,
        )
        for model, expected in built.items():
            table = model.__table__  # type: ignore[attr-defined]
            pk = [c.name for c in table.primary_key.columns]
            written = (
                (
                    await conn.execute(
                        select(*(table.columns[c] for c in expected[0]))
                        .order_by(*(table.columns[c] for c in pk))
                        .where(table.columns[pk[0]].in_([row[pk[0]] for row in expected]))
                    )
                )
                .mappings()
                .all()
            )
            stamps = {"created_at", "updated_at", "last_updated"}  # `now` of each build
            assert [{k: v for k, v in row.items() if k not in stamps} for row in written] == [
                {k: v for k, v in row.items() if k not in stamps}
                for row in sorted(expected, key=lambda row: tuple(row[c] for c in pk))
            ], table.name
            assert all(
                abs(row[k] - expected[0][k]).total_seconds() < 60
                for row in written
                for k in stamps & set(row)
            ), table.name

    with pytest.raises(ApplicationError) as conflict:
        await env.run(
            rows.write_location_rows,
            ProvisionInput(job_id=second_job["job_id"], cpo_id=int(cpo_id), index=0, tuning=tuning),
        )
    assert conflict.value.type == ErrorCode.CHARGER_IDENTITY_CONFLICT.value
    assert conflict.value.non_retryable
    async with engine.connect() as conn:  # rolled back whole: none of the second one's rows
        assert (
            await conn.execute(
                text("SELECT count(*) FROM ocpp.ocpi_locations WHERE job_id = :j"),
                {"j": second_job["job_id"]},
            )
        ).scalar_one() == 0

    async with ecs_client(settings) as ecs_async, secrets_client(settings) as sm:
        tasks = EcsTaskActivities(sessions, ecs_async, settings, sm)
        claimed, recorded = plan.chargers
        # the compensation marked the first deployment STOPPING before any start: never started
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE ocpp.charger_deployments SET state = 'STOPPING' WHERE id = :d"),
                {"d": claimed.deployment_id},
            )
        with pytest.raises(ApplicationError) as undone:
            await env.run(
                tasks.start_charger_task,
                ChargerTaskInput(
                    first_job["job_id"], 0, plan.location_id, claimed.deployment_id, claimed.identity
                ),
            )
        assert undone.value.type == ErrorCode.CANCELLED.value
        assert all_tasks_started_by(ecs, settings.ecs_cluster, claimed.deployment_id) == []

        # STOPPING marked after the claim, while RunTask was on its way: the record finds it,
        # writes nothing, and stops the task it started itself
        second_input = ChargerTaskInput(
            first_job["job_id"], 0, plan.location_id, recorded.deployment_id, recorded.identity
        )
        assert await tasks._claim(recorded.deployment_id) is True
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE ocpp.charger_deployments SET state = 'STOPPING' WHERE id = :d"),
                {"d": recorded.deployment_id},
            )
        with pytest.raises(ApplicationError) as undone:
            await tasks.run_and_record(second_input)
        assert undone.value.type == ErrorCode.CANCELLED.value
        assert running_tasks(ecs, settings.ecs_cluster, recorded.deployment_id) == []
        async with engine.connect() as conn:
            assert (
                await conn.execute(
                    text("SELECT count(*) FROM ocpp.ecs_tasks WHERE deployment_id = :d"),
                    {"d": recorded.deployment_id},
                )
            ).scalar_one() == 0

    # activation twice: one stamp, one version bump, the job's row READY
    activate = ActivateInput(
        first_job["job_id"], 0, plan.location_id, [c.deployment_id for c in plan.chargers]
    )
    await env.run(rows.activate_location, activate)
    async with engine.connect() as conn:
        once = (
            await conn.execute(
                text("SELECT status, version, last_updated FROM ocpp.ocpi_locations WHERE id = :l"),
                {"l": plan.location_id},
            )
        ).one()
    await env.run(rows.activate_location, activate)
    async with engine.connect() as conn:
        twice = (
            await conn.execute(
                text("SELECT status, version, last_updated FROM ocpp.ocpi_locations WHERE id = :l"),
                {"l": plan.location_id},
            )
        ).one()
        evses = (
            await conn.execute(
                text("SELECT DISTINCT status, last_updated FROM ocpp.ocpi_evses WHERE location_id = :l"),
                {"l": plan.location_id},
            )
        ).all()
        job_row = (
            await conn.execute(
                text("SELECT state, location_id, charger_ids FROM ocpp.job_locations WHERE job_id = :j"),
                {"j": first_job["job_id"]},
            )
        ).one()
    assert once == twice and once[0] == "ACTIVE" and once[1] == 2
    assert evses == [("AVAILABLE", once[2])]
    assert job_row == ("READY", plan.location_id, activate.charger_ids)
