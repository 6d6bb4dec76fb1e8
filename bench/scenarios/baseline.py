"""The direct baseline: the same activity code called from one asyncio loop, no Temporal."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from temporalio.testing import ActivityEnvironment

from activities.ecs_client import ecs_client, secrets_client
from activities.ecs_tasks import EcsTaskActivities
from activities.location_rows import LocationRowsActivities
from api.bulk_jobs import create_or_reuse_job
from api.schemas import BulkCreateRequest
from bench.report import say
from bench.workload import body
from contracts.job_start import job_tuning
from contracts.payloads import ActivateInput, ChargerTaskInput, ProvisionInput
from db.engine import make_engine, make_sessionmaker
from settings import Settings

if TYPE_CHECKING:
    from bench.core import Bench


async def direct(settings: Settings, cpo_id: int, n: int, chargers: int, concurrency: int) -> float:
    """The direct baseline: the job's rows written by the API's code, then every location
    provisioned by calling the same activities from one asyncio loop, no Temporal at all.
    Seconds from the first location started to the last one active."""
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    request = BulkCreateRequest.model_validate(body(n, chargers, f"BASE{cpo_id}"))
    async with sessions() as session:
        job, _ = await create_or_reuse_job(session, cpo_id, request, None)
    rows = LocationRowsActivities(sessions, settings)
    env = ActivityEnvironment()
    gate = asyncio.Semaphore(concurrency)
    async with ecs_client(settings) as ecs, secrets_client(settings) as sm:
        tasks = EcsTaskActivities(sessions, ecs, settings, sm)

        async def one(index: int) -> None:
            async with gate:
                plan = await env.run(
                    rows.write_location_rows,
                    ProvisionInput(job_id=job.id, cpo_id=cpo_id, index=index, tuning=job_tuning(settings)),
                )
                for c in plan.chargers:
                    await env.run(
                        tasks.start_charger_task,
                        ChargerTaskInput(job.id, index, plan.location_id, c.deployment_id, c.identity),
                    )
                await env.run(
                    rows.activate_location,
                    ActivateInput(job.id, index, plan.location_id, [c.deployment_id for c in plan.chargers]),
                )

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
    await engine.dispose()
    return elapsed


async def run(b: Bench) -> None:
    n, chargers = b.args.locations, b.args.chargers
    await b.prepare("baseline")
    cpo_id, _ = await b.cpo()
    say(f"baseline: {n} x {chargers}, {b.args.baseline_concurrency} in flight, no Temporal")
    seconds = await b.measured(
        f"baseline {n}x{chargers}",
        lambda: direct(b.settings, int(cpo_id), n, chargers, b.args.baseline_concurrency),
        locations=n,
    )
    b.baseline_rate[chargers] = n / seconds
    b.seconds["baseline"] = seconds
    b.report.add(
        f"direct baseline {n} x {chargers}: time / throughput",
        f"{seconds:.1f} s, {n / seconds:.1f} loc/s",
        baseline=f"{n / seconds:.1f} loc/s (fresh ECS)",
    )
