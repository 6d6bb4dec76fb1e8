"""The dev stack's moto keeps its state in memory: after a restart of `make run` the database still
lists RUNNING chargers whose tasks (and secrets) moto has forgotten. Before the workers start, each
ACTIVE location's RUNNING charger gets its task again, tagged as before, through the very code of
the start activity (`EcsTaskActivities.run_and_record`: secret, RunTask, the task's row).

moto 5.2.5 offers no persistence of its state; its recorder replays every request ever made,
which would also replay stops, deletes and ids long gone. Dev stack only: on real ECS tasks
outlive the processes that started them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import text

from activities.ecs_client import ecs_client, secrets_client
from activities.ecs_tasks import EcsTaskActivities
from contracts.payloads import ChargerTaskInput
from contracts.vocabulary import DeploymentState, LocationStatus
from db.engine import make_engine, make_sessionmaker
from settings import Settings
from worker.audit import running_charger_tasks

RUNNING_CHARGERS = text("""
    SELECT d.id, d.ocpi_location_id, l.job_id, coalesce(l.job_index, 0), cp.identity
    FROM ocpp.charger_deployments d
    JOIN ocpp.ocpi_locations l ON l.id = d.ocpi_location_id
    JOIN ocpp.charge_points cp ON cp.id = d.charge_point_id
    WHERE l.status = :active AND d.state = :running
    ORDER BY d.id
""")


async def restore_charger_tasks(
    settings: Settings, concurrency: int = 20, say: Callable[[str], None] | None = None
) -> int:
    """Start the task of every RUNNING charger of an ACTIVE location that ECS does not run;
    returns how many were started."""
    engine = make_engine(settings)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    RUNNING_CHARGERS,
                    {
                        "active": LocationStatus.ACTIVE.value,
                        "running": DeploymentState.RUNNING.value,
                    },
                )
            ).all()
        if not rows:
            return 0
        live = await running_charger_tasks(settings)
        missing = [
            ChargerTaskInput(
                job_id=job_id or "",
                index=index,
                location_id=location_id,
                deployment_id=dep_id,
                identity=identity,
            )
            for dep_id, location_id, job_id, index, identity in rows
            if dep_id not in live
        ]
        if missing and say is not None:
            say(f"moto restarted empty: starting again the tasks of {len(missing)} RUNNING charger(s)")
        gate = asyncio.Semaphore(concurrency)
        async with ecs_client(settings) as ecs, secrets_client(settings) as sm:
            acts = EcsTaskActivities(make_sessionmaker(engine), ecs, settings, sm)

            async def one(inp: ChargerTaskInput) -> None:
                async with gate:
                    await acts.run_and_record(inp)

            await asyncio.gather(*(one(inp) for inp in missing))
        return len(missing)
    finally:
        await engine.dispose()
