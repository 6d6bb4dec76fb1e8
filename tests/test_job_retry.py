"""POST …/jobs/{job_id}/retry: a new job of the FAILED locations, their stored input re-used."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.worker import Worker

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
    wait_for_job,
)


async def _ecs_task_rows(engine: AsyncEngine, deployment_ids: list[str]) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text("SELECT count(*) FROM ocpp.ecs_tasks WHERE deployment_id = ANY(:ids)"),
                    {"ids": deployment_ids},
                )
            ).scalar_one()
        )


async def test_failed_locations_are_retried_after_capacity_returns(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    ecs: Any,
    settings: Settings,
    fault_proxy: FaultProxy,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    full = f"CAPR-{cpo_id}-"
    fault_proxy.arm(Fault("RunTask", "capacity", body_contains=full))
    fault_proxy.arm(Fault("RunTask", "invalid_parameter", body_contains=f"BADR-{cpo_id}"))
    accepted = await submit(
        app_client,
        cpo_id,
        token,
        [
            location("Fine", [charger(f"OKR-{cpo_id}")]),
            location("Full A", [charger(f"{full}1"), charger(f"{full}2")]),
            location("Refused", [charger(f"BADR-{cpo_id}")]),
            location("Full B", [charger(f"{full}3")]),
        ],
    )
    jobs_url = f"/ocpi/cpos/{cpo_id}/locations/jobs"
    retry_url = f"{jobs_url}/{accepted['job_id']}/retry"
    job = await wait_for_job(app_client, accepted["status_url"], token)
    assert job["status"] == "FAILED"
    assert [loc["error"]["code"] if loc["error"] else None for loc in job["results"]["locations"]] == [
        None,
        "ECS_CAPACITY",
        "ECS_INVALID_PARAMETER",
        "ECS_CAPACITY",
    ]
    assert await table_counts(engine, cpo_id) == expected_counts([[1]])

    fault_proxy.clear()  # the capacity is back, and ECS takes the refused one too now
    key = {**token, "Idempotency-Key": f"retry-{cpo_id}"}
    first = await app_client.post(retry_url, headers=key)
    assert first.status_code == 202, first.text
    retry = first.json()
    assert retry["retry_of"] == accepted["job_id"] and retry["job_id"] != accepted["job_id"]
    assert first.headers["Location"] == retry["status_url"]
    again = await app_client.post(retry_url, headers=key)  # the same key: the same job
    assert again.status_code == 202 and again.json()["job_id"] == retry["job_id"]
    reused = await app_client.post(f"{retry_url}?all=true", headers=key)
    assert reused.status_code == 422 and reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"

    done = await wait_for_job(app_client, retry["status_url"], token)
    assert done["status"] == "READY", done
    assert done["retry_of"] == accepted["job_id"] and done["progress"]["total"] == 2
    # only the retryable ones, each mapped back to its index in the first request
    assert [(loc["index"], loc["origin_index"], loc["name"]) for loc in done["results"]["locations"]] == [
        (0, 1, "Full A"),
        (1, 3, "Full B"),
    ]
    original = (await app_client.get(accepted["status_url"], headers=token)).json()
    assert original["retries"] == [retry["job_id"]]

    # nothing retryable is left; ?all=true takes the refused one
    nothing = await app_client.post(retry_url, headers=token)
    assert nothing.status_code == 422 and nothing.json()["code"] == "NOTHING_TO_RETRY"
    rest = await app_client.post(f"{retry_url}?all=true", headers=token)
    assert rest.status_code == 202, rest.text
    last = await wait_for_job(app_client, rest.json()["status_url"], token)
    assert last["status"] == "READY"
    assert [loc["origin_index"] for loc in last["results"]["locations"]] == [2]
    drained = await app_client.post(f"{retry_url}?all=true", headers=token)
    assert drained.json()["code"] == "NOTHING_TO_RETRY"
    # a READY job has nothing to retry either
    assert (
        await app_client.post(f"{jobs_url}/{rest.json()['job_id']}/retry?all=true", headers=token)
    ).status_code == 422

    # exactly one ECS task per charger, in moto and in ocpp.ecs_tasks
    assert await table_counts(engine, cpo_id) == expected_counts([[1], [1, 1], [1], [1]])
    deployments = [
        d
        for loc in job["results"]["locations"] + done["results"]["locations"] + last["results"]["locations"]
        for d in loc["charger_ids"]
    ]
    assert len(deployments) == 5
    for dep_id in deployments:
        assert len(running_tasks(ecs, settings.ecs_cluster, dep_id)) == 1
        assert len(all_tasks_started_by(ecs, settings.ecs_cluster, dep_id)) == 1
    assert await _ecs_task_rows(engine, deployments) == 5

    listed = (await app_client.get(jobs_url, headers=token)).json()["data"]
    assert [j["retry_of"] for j in listed] == [accepted["job_id"], accepted["job_id"], None]
    assert listed[2]["retries"] == [retry["job_id"], rest.json()["job_id"]]


async def test_retry_refuses_a_running_job_and_other_tenants(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    engine: AsyncEngine,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    async with engine.begin() as conn:  # a job still running (no workflow needed to refuse it)
        await conn.execute(
            text(
                "INSERT INTO ocpp.jobs (id, cpo_id, job_type, status, total, succeeded, failed, request_hash,"
                " created_at, updated_at) VALUES (:id, :cpo, 'bulk_create_locations', 'PROVISIONING',"
                " 1, 0, 0, 'x', now(), now())"
            ),
            {"id": f"job-running-{cpo_id}", "cpo": int(cpo_id)},
        )
    url = f"/ocpi/cpos/{cpo_id}/locations/jobs/job-running-{cpo_id}/retry"
    running = await app_client.post(url, headers=token)
    assert running.status_code == 409 and running.json()["code"] == "JOB_RUNNING"
    missing = await app_client.post(f"/ocpi/cpos/{cpo_id}/locations/jobs/job-nope/retry", headers=token)
    assert missing.status_code == 404
    _other_id, other = await create_cpo(app_client, admin)
    assert (await app_client.post(url, headers=other)).status_code == 403
    assert (await app_client.post(url)).status_code == 401
