"""Transient faults are retried to success; a permanent one fails only its location, cleanly."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts import ids
from contracts.vocabulary import ERRORS, ErrorCode
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


async def test_throttling_5xx_and_dropped_connections_are_retried_to_ready(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    ecs: Any,
    settings: Settings,
    fault_proxy: FaultProxy,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    # More throttles of one charger than botocore's 3 attempts absorb, so Temporal's own retry is
    # exercised, and its second attempt looks for a live task first (ListTasks, dropped twice).
    throttles = fault_proxy.arm(Fault("RunTask", "throttle", remaining=4, body_contains=f"THR-{cpo_id}-A"))
    errors = fault_proxy.arm(Fault("RunTask", "server_error", remaining=2, body_contains=f"THR-{cpo_id}-B"))
    drops = fault_proxy.arm(Fault("ListTasks", "drop", remaining=2))
    describe = fault_proxy.arm(Fault("DescribeTasks", "throttle", remaining=3))
    # as real ECS: RunTask answers PROVISIONING, so every location waits through DescribeTasks
    provisioning = fault_proxy.arm(Fault("RunTask", "provisioning"))
    accepted = await submit(
        app_client,
        cpo_id,
        token,
        [
            location("Throttled A", [charger(f"THR-{cpo_id}-A")]),
            location("Throttled B", [charger(f"THR-{cpo_id}-B"), charger(f"THR-{cpo_id}-C")]),
        ],
    )
    job = await wait_for_job(app_client, accepted["status_url"], token)

    assert job["status"] == "READY", job
    assert (throttles.injected, errors.injected, drops.injected, describe.injected) == (4, 2, 2, 3)
    assert provisioning.injected == 3  # one successful RunTask per charger, none doubled
    assert await table_counts(engine, cpo_id) == expected_counts([[1], [1, 1]])
    for loc in job["results"]["locations"]:
        for dep_id in loc["charger_ids"]:
            assert len(running_tasks(ecs, settings.ecs_cluster, dep_id)) == 1
            assert len(all_tasks_started_by(ecs, settings.ecs_cluster, dep_id)) == 1


async def test_transient_database_error_is_retried_to_ready(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    # PostgreSQL itself fails the first two inserts of this CPO's locations (serialization_failure)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SEQUENCE ocpp.test_fault_seq"))
        await conn.execute(
            text(f"""
            CREATE FUNCTION ocpp.test_fault() RETURNS trigger AS $$
            BEGIN
              IF NEW.network_id = {int(cpo_id)} AND nextval('ocpp.test_fault_seq') <= 2 THEN
                RAISE EXCEPTION 'injected transient fault' USING ERRCODE = '40001';
              END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql""")
        )
        await conn.execute(
            text(
                "CREATE TRIGGER test_fault BEFORE INSERT ON ocpp.ocpi_locations"
                " FOR EACH ROW EXECUTE FUNCTION ocpp.test_fault()"
            )
        )
    try:
        accepted = await submit(
            app_client,
            cpo_id,
            token,
            [
                location("DB fault", [charger(f"DBF-{cpo_id}-1")]),
            ],
        )
        job = await wait_for_job(app_client, accepted["status_url"], token)
        async with engine.connect() as conn:
            hits = (await conn.execute(text("SELECT last_value FROM ocpp.test_fault_seq"))).scalar_one()
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER test_fault ON ocpp.ocpi_locations"))
            await conn.execute(text("DROP FUNCTION ocpp.test_fault()"))
            await conn.execute(text("DROP SEQUENCE ocpp.test_fault_seq"))

    assert job["status"] == "READY", job
    assert hits == 3  # two injected failures, then the insert that went through
    assert await table_counts(engine, cpo_id) == expected_counts([[1]])


async def test_permanent_ecs_error_fails_only_its_location_and_leaves_nothing(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    ecs: Any,
    settings: Settings,
    fault_proxy: FaultProxy,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    bad = f"PERMA-{cpo_id}-BAD"
    fault_proxy.arm(Fault("RunTask", "invalid_parameter", body_contains=bad))
    accepted = await submit(
        app_client,
        cpo_id,
        token,
        [
            location("Fine", [charger(f"PERMA-{cpo_id}-OK")]),
            # the first charger of this location starts fine; the second is refused for good
            location("Doomed", [charger(f"PERMA-{cpo_id}-STARTS"), charger(bad)]),
            location("Also fine", []),
        ],
    )
    job = await wait_for_job(app_client, accepted["status_url"], token)

    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "LOCATIONS_FAILED"
    assert job["error"]["retryable"] is False
    assert job["progress"] == {"total": 3, "succeeded": 2, "failed": 1, "in_progress": 0}
    fine, doomed, also_fine = job["results"]["locations"]
    assert fine["status"] == also_fine["status"] == "READY"
    assert doomed["status"] == "FAILED"
    assert doomed["location_id"] is None and doomed["charger_ids"] == []
    assert doomed["error"]["code"] == "ECS_INVALID_PARAMETER"
    assert doomed["error"]["retryable"] is False
    assert job["results"]["location_ids"] == [fine["location_id"], also_fine["location_id"]]
    # none of the doomed location's rows, and none of its tasks still running
    assert await table_counts(engine, cpo_id) == expected_counts([[1], []])
    job_id = accepted["job_id"]
    for n in range(2):
        dep_id = ids.deployment_id(job_id, 1, n)
        assert running_tasks(ecs, settings.ecs_cluster, dep_id) == []
    assert len(all_tasks_started_by(ecs, settings.ecs_cluster, ids.deployment_id(job_id, 1, 0))) == 1
    gone = await app_client.get(f"/ocpi/cpos/{cpo_id}/locations/{ids.location_id(job_id, 1)}", headers=token)
    assert gone.status_code == 404


async def test_capacity_failure_ends_the_location_with_a_retryable_code(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    fault_proxy: FaultProxy,
    temporal: WorkflowEnvironment,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    full = f"CAP-{cpo_id}-FULL"
    fault_proxy.arm(Fault("RunTask", "capacity", body_contains=full))
    accepted = await submit(app_client, cpo_id, token, [location("No room", [charger(full)])])
    job = await wait_for_job(app_client, accepted["status_url"], token)

    assert job["status"] == "FAILED"
    assert job["error"]["retryable"] is True
    (only,) = job["results"]["locations"]
    assert only["error"]["code"] == "ECS_CAPACITY"
    assert only["error"]["retryable"] is True
    # the tenant reads what to do, never AWS's text; operators find that in Temporal
    assert only["error"]["message"] == ERRORS[ErrorCode.ECS_CAPACITY].message
    assert "vCPU" not in json.dumps(job)
    child = temporal.client.get_workflow_handle(ids.provision_workflow_id(accepted["job_id"], 0))
    with pytest.raises(WorkflowFailureError) as failure:
        await child.result()
    assert "vCPUs" in str(failure.value.cause)
    assert await table_counts(engine, cpo_id) == expected_counts([])
