"""Idempotency-Key on the bulk POST: a retried (even concurrent) POST gets the same job."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.helpers import charger, create_cpo, job_rows, location, unique


async def test_same_key_same_job_even_concurrently(
    app_with: Any, admin: dict[str, str], engine: AsyncEngine, temporal: WorkflowEnvironment
) -> None:
    body = {"locations": [location("Idem A"), location("Idem B")]}
    other_body = {"locations": [location("Idem C")]}
    async with app_with(task_queue="idempotency-nobody-polls") as client:
        cpo_id, token = await create_cpo(client, admin)
        other_cpo, other_token = await create_cpo(client, admin)
        url = f"/ocpi/cpos/{cpo_id}/locations"

        def post(key: str, payload: dict[str, Any], headers: dict[str, str] = token, path: str = url) -> Any:
            return client.post(path, json=payload, headers={**headers, "Idempotency-Key": key})

        burst = await asyncio.gather(*(post("key-1", body) for _ in range(8)))
        repeat = await post("key-1", body)
        reused = await post("key-1", other_body)
        second = await post("key-2", body)
        elsewhere = await post("key-1", body, other_token, f"/ocpi/cpos/{other_cpo}/locations")

    assert [r.status_code for r in burst] == [202] * 8, [r.text for r in burst]
    job_ids = {r.json()["job_id"] for r in burst}
    assert len(job_ids) == 1
    (job_id,) = job_ids
    assert {r.json()["workflow_run_id"] for r in burst} == {burst[0].json()["workflow_run_id"]}
    assert repeat.status_code == 202 and repeat.json()["job_id"] == job_id
    assert reused.status_code == 422
    assert reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert second.status_code == 202 and second.json()["job_id"] != job_id
    assert elsewhere.status_code == 202
    assert elsewhere.json()["job_id"] not in (job_id, second.json()["job_id"])
    # one job per key and CPO, with one set of location rows each
    assert await job_rows(engine, cpo_id) == (2, 4)
    assert await job_rows(engine, other_cpo) == (1, 2)
    description = await temporal.client.get_workflow_handle(job_id).describe()
    assert description.run_id == burst[0].json()["workflow_run_id"]
    for started in (job_id, second.json()["job_id"], elsewhere.json()["job_id"]):
        await temporal.client.get_workflow_handle(started).terminate("idempotency test over")


async def test_the_chargers_of_a_running_job_are_taken_before_their_rows_exist(
    app_with: Any, admin: dict[str, str], engine: AsyncEngine, temporal: WorkflowEnvironment
) -> None:
    """No worker polls this queue, so the job's rows are never written: its charger identities
    are taken all the same (a POST of the same body without a key is 422), while a burst with one
    key still gets its one job (a repeat that waited on the CPO's job-creation lock finds it)."""
    body = {
        "locations": [
            location("Claim A", [charger(unique("CLAIM")), charger(unique("CLAIM"))]),
            location("Claim B", []),
        ]
    }
    async with app_with(task_queue="claims-nobody-polls") as client:
        cpo_id, token = await create_cpo(client, admin)
        url = f"/ocpi/cpos/{cpo_id}/locations"
        burst = await asyncio.gather(
            *(client.post(url, json=body, headers={**token, "Idempotency-Key": "k"}) for _ in range(4))
        )
        again = await client.post(url, json=body, headers=token)
    assert [r.status_code for r in burst] == [202] * 4, [r.text for r in burst]
    (job_id,) = {r.json()["job_id"] for r in burst}
    assert again.status_code == 422, again.text
    errors = again.json()["errors"]
    assert [(e["field"], e["type"]) for e in errors] == [
        ("locations[0].chargers[0].identity", "identity_taken"),
        ("locations[0].chargers[1].identity", "identity_taken"),
    ]
    assert all("being provisioned" in e["message"] for e in errors)
    assert await job_rows(engine, cpo_id) == (1, 2)
    await temporal.client.get_workflow_handle(job_id).terminate("identity test over")
