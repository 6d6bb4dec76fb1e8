"""Requests racing running jobs: the same body twice at once, DELETE of locations of a running job,
a cancel."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import ids
from tests.fault_proxy import Fault
from tests.faults.stack import (
    ADMIN,
    JOB_SIZE,
    FaultStack,
    Job,
    api_with,
    check_books,
    check_small,
    identity,
    location_state,
    marker,
    running_of,
    small_job,
    state_is,
)
from tests.helpers import create_cpo, eventually

pytestmark = pytest.mark.faults


async def test_same_body_posted_twice_at_once_without_a_key(
    stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """Without an Idempotency-Key, the same body POSTed twice is two requests: the first job
    provisions the chargers and the second is refused 422, their identities being taken, even
    when both arrive at once. Never a charger twice, never the locations split over two jobs."""
    cpo_id, token = await create_cpo(api, {"Authorization": f"Bearer {ADMIN}"})
    chargers = [1, 1, 1, 1]
    body = {
        "locations": [
            {
                "name": f"Twice {i}",
                "address": "Rue de la Loi 16",
                "city": "Brussels",
                "country": "BE",
                "coordinates": {"latitude": 50.8, "longitude": 4.3},
                "timezone": "Europe/Brussels",
                "chargers": [{"identity": identity("TWICE", cpo_id, i), "connector_type": "Type2"}],
            }
            for i in range(len(chargers))
        ]
    }
    answers = await asyncio.gather(
        *(api.post(f"/ocpi/cpos/{cpo_id}/locations", json=body, headers=token) for _ in range(2))
    )
    print(f"\n[same body twice] answers {[a.status_code for a in answers]}")
    assert sorted(a.status_code for a in answers) == [202, 422], [a.text for a in answers]
    accepted = next(a for a in answers if a.status_code == 202)
    refused = next(a for a in answers if a.status_code == 422)
    assert {e["type"] for e in refused.json()["errors"]} == {"identity_taken"}
    job = Job(api, cpo_id, token, body, accepted.json())
    result = await job.wait_end(stack)
    assert result["status"] == "READY", result["error"]
    await check_small(stack, db, job, result, chargers, "same body POSTed twice at once")
    async with db.connect() as conn:
        jobs = (
            await conn.execute(text("SELECT count(*) FROM ocpp.jobs WHERE cpo_id = :c"), {"c": int(cpo_id)})
        ).scalar_one()
        identities = (
            await conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT identity) FROM ocpp.charge_points WHERE network_id = :c"
                ),
                {"c": int(cpo_id)},
            )
        ).one()
    assert jobs == 1 and tuple(identities) == (len(chargers), len(chargers))


async def test_delete_of_locations_while_their_job_runs(stack: FaultStack, db: AsyncEngine) -> None:
    """While its job still runs (two locations at a time): DELETE of a location being
    provisioned is 409 and changes nothing; DELETE of a location already READY removes it at
    once (its job's result still counts it READY). The job ends READY and the books agree."""
    assert stack.proxy is not None
    proxy = stack.proxy
    chargers = [1, 1, 1, 1]
    slow: list[Fault] = []

    def arm(cpo_id: str) -> None:  # location 2 takes a while to start its task
        slow.append(
            proxy.arm(Fault("RunTask", "delay", delay_seconds=4, body_contains=marker("DJOB", cpo_id, 2)))
        )

    async with api_with(stack, child_window=2) as api:
        job = await small_job(api, "DJOB", chargers, arm)
        provisioning = ids.location_id(job.job_id, 2)
        await eventually(lambda: slow[0].injected >= 1, "location 2's RunTask")
        ready = ids.location_id(job.job_id, 0)
        await eventually(lambda: state_is(db, ready, "ACTIVE"), "location 0 READY", timeout=90)
        assert await location_state(db, provisioning) == "PROVISIONING"
        refused = await api.delete(f"/ocpi/cpos/{job.cpo_id}/locations/{provisioning}", headers=job.token)
        removed = await api.delete(f"/ocpi/cpos/{job.cpo_id}/locations/{ready}", headers=job.token)
        assert (await job.status())["status"] == "PROVISIONING"  # all this while the job runs
        result = await job.wait_end(stack)
    assert refused.status_code == 409 and refused.json()["code"] == "LOCATION_PROVISIONING", refused.text
    assert removed.status_code == 204, removed.text
    assert result["status"] == "READY", result["error"]
    assert [loc["status"] for loc in result["results"]["locations"]] == ["READY"] * len(chargers)
    assert await location_state(db, ready) == "REMOVED"
    assert running_of(stack, job, 0, 1) == [0] and running_of(stack, job, 2, 1) == [1]
    await check_small(stack, db, job, result, chargers, "DELETE while the job runs", removed=(0,))


async def test_cancel_a_running_job(stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine) -> None:
    job = await Job.submit(api, "CNCL")
    await job.wait_progress(JOB_SIZE // 4)
    response = await api.delete(job.status_url, headers=job.token)
    assert response.status_code in (200, 202), response.text
    result = await job.wait_end(stack)
    assert result["status"] == "CANCELLED"
    states = {loc["status"] for loc in result["results"]["locations"]}
    assert states <= {"READY", "CANCELLED"}
    ready = sum(loc["status"] == "READY" for loc in result["results"]["locations"])
    assert JOB_SIZE // 4 <= ready < JOB_SIZE
    assert result["progress"] == {
        "total": JOB_SIZE,
        "succeeded": ready,
        "failed": JOB_SIZE - ready,
        "in_progress": 0,
    }
    await check_books(stack, db, job, result, "cancel mid-job")
