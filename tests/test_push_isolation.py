"""Pushes to eMSPs cannot starve provisioning: they run on their own task queue with slots of
their own (and a few per eMSP), so a Receiver that never answers leaves a bulk job's time to
READY where it is without one.

Workers of this module's own, on queues of their own, with few main-queue activity slots: were
the pushes on the main queue (as before), the hanging ones would hold every slot the job's own
activities need.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.helpers import charger, location, unique, wait_for_job
from tests.ocpi_emsp import FakeEmsp
from tests.suite_stack import running_workers
from tests.test_ocpi import new_cpo, serve_gateway

pytestmark = pytest.mark.asyncio(loop_scope="session")
LOCATIONS = 24


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def isolated(
    settings: Settings, engine: AsyncEngine, temporal: WorkflowEnvironment
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    own = settings.model_copy(
        update={
            "task_queue": "isolation-main",
            "ecs_task_queue": "isolation-ecs",
            "ocpi_push_task_queue": "isolation-push",
            "worker_max_concurrent_activities": 4,
            "ocpi_push_attempt_timeout_seconds": 60.0,
        }
    )
    async with running_workers(temporal.client, own, engine):
        async with serve_gateway(own, temporal.client) as client:  # on a port: the eMSP calls back
            yield client, own


async def timed_job(client: httpx.AsyncClient, cpo: dict[str, Any], prefix: str) -> float:
    started = time.monotonic()
    accepted = await client.post(
        f"/ocpi/cpos/{cpo['cpo_id']}/locations",
        headers=cpo["bearer"],
        json={"locations": [location(f"{prefix} {n}", [charger(unique(prefix))]) for n in range(LOCATIONS)]},
    )
    assert accepted.status_code == 202, accepted.text
    job = await wait_for_job(client, accepted.json()["status_url"], cpo["bearer"])
    assert job["status"] == "READY", job
    return time.monotonic() - started


async def test_a_receiver_that_never_answers_does_not_slow_a_bulk_job(
    isolated: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, _ = isolated
    quiet = await new_cpo(client)
    before = await timed_job(client, quiet, "ISO-A")

    hanging = FakeEmsp("NL", "HNG", hang=True)
    await hanging.start()
    try:
        cpo = await new_cpo(client)
        registered = await client.post(
            f"/ocpi/cpos/{cpo['cpo_id']}/emsps",
            headers=cpo["bearer"],
            json={"versions_url": f"{hanging.base}/ocpi/versions", "token_a": hanging.token_a},
        )
        assert registered.status_code == 201, registered.text
        with_hanging = await timed_job(client, cpo, "ISO-B")
        await asyncio.sleep(1)
        pushes = hanging.attempts
        after = await timed_job(client, quiet, "ISO-C")
    finally:
        await hanging.stop()
    reference = max(before, after)
    print(
        f"\n[push isolation] {LOCATIONS} locations: {before:.1f} s and {after:.1f} s without a hanging "
        f"eMSP, {with_hanging:.1f} s with one ({with_hanging / reference:.2f}x); "
        f"{pushes} pushes hanging at the eMSP"
    )
    assert pushes >= 4  # the Receiver was called, and held what it got (at most 4 at once per worker)
    # the bound: within 1.5x of the same job without the hanging Receiver (plus a
    # second of slack for this shared 2-core machine)
    assert with_hanging <= 1.5 * reference + 1.0, (before, with_hanging, after)
