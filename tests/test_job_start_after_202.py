"""A workflow start slower than `job_start_wait_seconds` goes on after the 202 (api/job_starts.py):
the job still runs to READY with its run id recorded, a cancel sent before the start lands
still cancels it, and a start refused after the answer leaves the job to the reconciler."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.app import create_app
from settings import Settings
from tests.helpers import charger, create_cpo, job_rows, location, submit, table_counts, unique, wait_for_job
from tests.suite_stack import asgi_client
from tests.test_reconcile import reconcile


class SlowStart:
    """Temporal's client, whose workflow starts take `delay` seconds (a busy server), then are
    made, or refused with `refuse`."""

    def __init__(self, real: Client, delay: float, refuse: RPCStatusCode | None = None) -> None:
        self.real = real
        self.delay = delay
        self.refuse = refuse

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def start_workflow(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(self.delay)
        if self.refuse is not None:
            raise RPCError("unavailable", self.refuse, b"")
        return await self.real.start_workflow(*args, **kwargs)


def slow_app(settings: Settings, temporal: WorkflowEnvironment, delay: float, **kwargs: Any) -> Any:
    answering = settings.model_copy(update={"job_start_wait_seconds": 0.05, "status_cache_seconds": 0})
    client = SlowStart(temporal.client, delay, **kwargs)
    return create_app(answering, temporal_client=client)  # type: ignore[arg-type]


async def run_id_of(engine: AsyncEngine, job_id: str) -> str | None:
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT workflow_run_id FROM ocpp.jobs WHERE id = :j"), {"j": job_id})
        return found.scalar_one()  # type: ignore[no-any-return]


async def test_a_start_slower_than_the_wait_answers_first_and_the_job_runs_to_ready(
    admin: dict[str, str],
    app_client: httpx.AsyncClient,
    workers: list[Worker],
    temporal: WorkflowEnvironment,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    async with asgi_client(slow_app(settings, temporal, delay=1.0), "http://t", timeout=30) as client:
        accepted = await submit(
            client, cpo_id, token, [location("After the answer", [charger(unique("LATE"))])]
        )
        # answered before the start landed: no run id yet, the job's rows already committed
        assert accepted["workflow_run_id"] is None
        assert accepted["status"] == "PROVISIONING"
        assert await job_rows(engine, cpo_id) == (1, 1)
        done = await wait_for_job(client, accepted["status_url"], token)
    assert done["status"] == "READY", done
    description = await temporal.client.get_workflow_handle(accepted["job_id"]).describe()
    # the start, once landed, recorded its run id on the job: the status shows it
    assert await run_id_of(engine, accepted["job_id"]) == description.run_id
    assert done["workflow_run_id"] == description.run_id
    assert (await table_counts(engine, cpo_id))["ecs_tasks"] == 1


async def test_a_cancel_sent_before_the_start_lands_cancels_the_job(
    admin: dict[str, str],
    app_client: httpx.AsyncClient,
    workers: list[Worker],
    temporal: WorkflowEnvironment,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    async with asgi_client(slow_app(settings, temporal, delay=1.0), "http://t", timeout=30) as client:
        accepted = await submit(
            client, cpo_id, token, [location("Cancelled early", [charger(unique("EARLY"))])]
        )
        assert accepted["workflow_run_id"] is None
        # the cancel waits for this process's start, then cancels the workflow it started
        cancelled = await client.delete(accepted["status_url"], headers=token)
        assert cancelled.status_code in (200, 202), cancelled.text
        done = await wait_for_job(client, accepted["status_url"], token)
    assert done["status"] == "CANCELLED", done
    assert sum((await table_counts(engine, cpo_id)).values()) == 0


async def test_a_cancel_of_a_job_whose_start_never_landed_starts_and_cancels_it(
    admin: dict[str, str],
    app_client: httpx.AsyncClient,
    workers: list[Worker],
    temporal: WorkflowEnvironment,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    """The API that answered died before its start landed (a refused start after the 202 stands
    in for it); another API instance gets the cancel: it starts the workflow, same id, and
    cancels it, so the reconciler finds nothing left to start."""
    cpo_id, token = await create_cpo(app_client, admin)
    refused = slow_app(settings, temporal, delay=0.3, refuse=RPCStatusCode.UNAVAILABLE)
    async with asgi_client(refused, "http://t") as client:
        accepted = await submit(
            client, cpo_id, token, [location("Never started", [charger(unique("NEVER"))])]
        )
    assert await job_rows(engine, cpo_id) == (1, 1)  # answered 202, so the job is kept
    cancelled = await app_client.delete(accepted["status_url"], headers=token)
    assert cancelled.status_code in (200, 202), cancelled.text
    done = await wait_for_job(app_client, accepted["status_url"], token)
    assert done["status"] == "CANCELLED", done
    await reconcile(temporal, settings)
    assert (await wait_for_job(app_client, accepted["status_url"], token))["status"] == "CANCELLED"
    assert sum((await table_counts(engine, cpo_id)).values()) == 0


async def test_a_start_refused_after_the_202_is_left_to_the_reconciler(
    admin: dict[str, str],
    app_client: httpx.AsyncClient,
    workers: list[Worker],
    temporal: WorkflowEnvironment,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    refused = slow_app(settings, temporal, delay=0.3, refuse=RPCStatusCode.UNAVAILABLE)
    async with asgi_client(refused, "http://t") as client:
        accepted = await submit(client, cpo_id, token, [location("Refused late", [charger(unique("REFL"))])])
    # the lifespan's shutdown waited for the start: it failed after the answer, the job stays
    assert accepted["workflow_run_id"] is None
    assert await job_rows(engine, cpo_id) == (1, 1)
    assert (await reconcile(temporal, settings)).started >= 1
    done = await wait_for_job(app_client, accepted["status_url"], token)
    assert done["status"] == "READY", done
    assert (await table_counts(engine, cpo_id))["ecs_tasks"] == 1


async def test_a_start_refused_within_the_wait_is_a_503_and_leaves_nothing(
    admin: dict[str, str],
    app_client: httpx.AsyncClient,
    temporal: WorkflowEnvironment,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    waiting = settings.model_copy(update={"job_start_wait_seconds": 5})
    app = create_app(waiting, temporal_client=SlowStart(temporal.client, 0.05, RPCStatusCode.UNAVAILABLE))  # type: ignore[arg-type]
    async with asgi_client(app, "http://t") as client:
        response = await client.post(
            f"/ocpi/cpos/{cpo_id}/locations",
            json={"locations": [location("Down", [charger(unique("DOWN"))])]},
            headers=token,
        )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "TEMPORAL_UNAVAILABLE"
    assert await job_rows(engine, cpo_id) == (0, 0)
