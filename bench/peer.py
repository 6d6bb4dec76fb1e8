"""The durable peer: the floor's steps as DBOS Transact workflows, every step checkpointed in
PostgreSQL (a bench-only dependency: `uv sync --group bench`, which `make bench` does).

One workflow per location (its ID derived from the run's job id and the index, its input the
location's normalized JSON, as the product's job_locations row holds it), `concurrency` (32) in
flight; its steps are the floor's (bench/floor.py), each a DBOS step whose output DBOS writes to
its system database before the next one runs:

    rows (one transaction of tables 1-9) → per charger: CreateSecret, RunTask → activation

so the peer differs from the floor by its engine alone. The chargers of a location are started
one after the other: a DBOS workflow must call its steps in a deterministic order, which two
chains awaited together would not keep (the floor and the product start them together).

DBOS keeps its system database in the same embedded PostgreSQL, a database of its own
(`ocpplab_dbos`, created afresh for each run). Its system-database pool is sized for the
workflows in flight so that the pool is not what holds it back.

Run by the bench as a process of its own (bench/runner.py): `--scenarios peer`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from dbos import DBOS, SetWorkflowID

from bench.floor import RESOURCES, in_flight, verify
from bench.runner import child_main, libpq_url
from contracts.payloads import ChargerTaskInput, LocationPlan
from settings import Settings

SYSTEM_DATABASE = "ocpplab_dbos"


@DBOS.step(name="write_location_rows")
async def write_rows(index: int, loc_json: str) -> LocationPlan:
    return await RESOURCES.steps.write_rows(index, loc_json)


@DBOS.step(name="put_secret")
async def put_secret(inp: ChargerTaskInput) -> str:
    return await RESOURCES.steps.put_secret(inp)


@DBOS.step(name="run_task")
async def run_task(inp: ChargerTaskInput, secret_arn: str) -> dict[str, Any]:
    return await RESOURCES.steps.run_task(inp, secret_arn)


@DBOS.step(name="activate_location")
async def activate(plan: LocationPlan, tasks: list[dict[str, Any]]) -> None:
    await RESOURCES.steps.activate(plan, tasks)


@DBOS.workflow(name="ProvisionLocation")
async def provision_location(index: int, loc_json: str) -> str:
    plan = await write_rows(index, loc_json)
    tasks = []
    for n in range(len(plan.chargers)):
        inp = RESOURCES.steps.charger(plan, index, n)
        tasks.append(await run_task(inp, await put_secret(inp)))
    await activate(plan, tasks)
    return plan.location_id


async def prepare(settings: Settings, spec: dict[str, Any]) -> Callable[[], Awaitable[dict[str, Any]]]:
    items = await RESOURCES.open(settings, spec, "peer")
    job_id = RESOURCES.steps.job_id
    concurrency = int(spec["concurrency"])
    await RESOURCES.admin.execute(f"DROP DATABASE IF EXISTS {SYSTEM_DATABASE} WITH (FORCE)")
    await RESOURCES.admin.execute(f"CREATE DATABASE {SYSTEM_DATABASE}")
    system_database = libpq_url(settings.database_url, SYSTEM_DATABASE)
    DBOS(
        config={
            "name": "ocpplab-peer",
            "system_database_url": system_database,
            "sys_db_pool_size": concurrency + 8,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()

    async def one(index: int, loc_json: str) -> None:
        with SetWorkflowID(f"{job_id}/location-{index}"):
            await provision_location(index, loc_json)

    async def work() -> dict[str, Any]:
        result = await in_flight(items, concurrency, one)
        async with await psycopg.AsyncConnection.connect(system_database) as conn:
            row = await (await conn.execute("SELECT count(*) FROM dbos.operation_outputs")).fetchone()
        return {**result, **await verify(RESOURCES.admin, job_id), "checkpoints": row[0] if row else 0}

    return work


async def cleanup() -> None:
    DBOS.destroy()
    await RESOURCES.close()


if __name__ == "__main__":
    child_main(prepare, cleanup)
