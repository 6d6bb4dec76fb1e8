"""GET /ocpi/cpos/{cpo_id}/locations/jobs: a CPO's jobs from PostgreSQL, newest first, filtered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from temporalio.worker import Worker

from tests.helpers import create_cpo, location, submit, wait_for_job


async def test_jobs_list_newest_first_paged_filtered_and_tenant_bound(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    url = f"/ocpi/cpos/{cpo_id}/locations/jobs"
    empty = await app_client.get(url, headers=token)
    assert empty.status_code == 200 and empty.json() == {"data": [], "total": 0, "page": 1, "limit": 50}

    first = await submit(app_client, cpo_id, token, [location("One")])
    keyed = await app_client.post(
        f"/ocpi/cpos/{cpo_id}/locations",
        headers={**token, "Idempotency-Key": "k-1"},
        json={"locations": [location("Two"), location("Three")]},
    )
    assert keyed.status_code == 202
    second = keyed.json()
    for job in (first, second):
        await wait_for_job(app_client, job["status_url"], token)

    listed = (await app_client.get(url, headers=token)).json()
    assert listed["total"] == 2
    assert [j["job_id"] for j in listed["data"]] == [second["job_id"], first["job_id"]]
    newest = listed["data"][0]
    assert newest["status"] == "READY"
    assert newest["progress"] == {"total": 2, "succeeded": 2, "failed": 0, "in_progress": 0}
    assert newest["idempotency_key"] == "k-1" and listed["data"][1]["idempotency_key"] is None
    assert newest["ended_at"] is not None and newest["retry_of"] is None and newest["retries"] == []

    paged = (await app_client.get(url, params={"page": 2, "limit": 1}, headers=token)).json()
    assert [j["job_id"] for j in paged["data"]] == [first["job_id"]] and paged["total"] == 2
    assert (await app_client.get(url, params={"status": "FAILED"}, headers=token)).json()["total"] == 0
    assert (await app_client.get(url, params={"status": "READY"}, headers=admin)).json()["total"] == 2
    created = datetime.fromisoformat(newest["created_at"])
    after = (
        await app_client.get(
            url, params={"created_after": (created - timedelta(microseconds=1)).isoformat()}, headers=token
        )
    ).json()
    assert [j["job_id"] for j in after["data"]] == [second["job_id"]]
    before = (await app_client.get(url, params={"created_before": created.isoformat()}, headers=token)).json()
    assert [j["job_id"] for j in before["data"]] == [first["job_id"]]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (await app_client.get(url, params={"created_after": future}, headers=token)).json()["total"] == 0

    bad = await app_client.get(url, params={"status": "DONE"}, headers=token)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"
    naive = await app_client.get(url, params={"created_after": "2026-01-01T00:00:00"}, headers=token)
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "created_after"
    assert (await app_client.get(url, params={"limit": 101}, headers=token)).status_code == 422

    other_id, other = await create_cpo(app_client, admin)
    assert (await app_client.get(url, headers=other)).status_code == 403
    assert (await app_client.get(url)).status_code == 401
    assert (await app_client.get("/ocpi/cpos/999999999/locations/jobs", headers=admin)).status_code == 404
    assert (await app_client.get(f"/ocpi/cpos/{other_id}/locations/jobs", headers=other)).json()["total"] == 0
    # the location routes next to it are unchanged
    assert (await app_client.get(f"/ocpi/cpos/{cpo_id}/locations/loc-nope", headers=token)).status_code == 404
