"""POST …/locations?dry_run=true: the POST's whole validation, nothing written, nothing started."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.worker import Worker

from db.catalog import location_templates
from tests.helpers import charger, create_cpo, job_rows, location, submit, table_counts, wait_for_job


async def test_dry_run_reports_every_problem_and_writes_nothing(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    taken = f"DRY-{cpo_id}-TAKEN"
    done = await submit(app_client, cpo_id, token, [location("Existing", [charger(taken)])])
    await wait_for_job(app_client, done["status_url"], token)
    async with engine.begin() as conn:  # a running job's location still waiting for its child
        await conn.execute(
            text(
                "INSERT INTO ocpp.jobs (id, cpo_id, job_type, status, total, succeeded, failed, request_hash,"
                " created_at, updated_at) VALUES (:id, :c, 'bulk_create_locations', 'PROVISIONING', 1, 0, 0,"
                " 'x', now(), now())"
            ),
            {"id": f"job-dry-{cpo_id}", "c": int(cpo_id)},
        )
        await conn.execute(
            text(
                "INSERT INTO ocpp.job_locations (job_id, index, input, state, updated_at) VALUES (:id, 0,"
                " CAST(:input AS jsonb), 'PENDING', now())"
            ),
            {"id": f"job-dry-{cpo_id}", "input": f'{{"chargers": [{{"identity": "DRY-{cpo_id}-CLAIMED"}}]}}'},
        )
    before = (await job_rows(engine, cpo_id), await table_counts(engine, cpo_id))
    url = f"/ocpi/cpos/{cpo_id}/locations?dry_run=true"

    bad = await app_client.post(
        url,
        headers=token,
        json={
            "locations": [
                location("Fine", [charger(f"DRY-{cpo_id}-A")]),
                location("Too far", coordinates={"latitude": 91, "longitude": 4.3}),
                location("Twice", [charger(f"DRY-{cpo_id}-A")]),
                location("Taken", [charger(taken)]),
                location("Claimed", [charger(f"DRY-{cpo_id}-CLAIMED")]),
                location("No such template", template="no-such-template"),
            ],
            "callback_url": "ftp://example.com/x",
        },
    )
    assert bad.status_code == 200, bad.text
    result = bad.json()
    assert result["valid"] is False
    found = {(p["index"], p["field"], p["code"]) for p in result["problems"]}
    assert {
        (1, "locations[1].coordinates.latitude", "less_than_equal"),
        (2, "locations[2].chargers[0].identity", "duplicate_identity"),
        (3, "locations[3].chargers[0].identity", "identity_taken"),
        (4, "locations[4].chargers[0].identity", "identity_taken"),
        (5, "locations[5].template", "value_error"),
        (None, "callback_url", "string_pattern_mismatch"),
    } <= found, found
    assert all(p["message"] for p in result["problems"])
    # the real POST refuses the same body (422) and names the same fields
    real = await app_client.post(
        f"/ocpi/cpos/{cpo_id}/locations",
        headers=token,
        json={"locations": [location("Taken", [charger(taken)])]},
    )
    assert real.status_code == 422
    assert real.json()["errors"][0]["field"] == "locations[0].chargers[0].identity"

    slug = next(iter(location_templates()))
    template_chargers = sum(g.count for g in location_templates()[slug].charger_groups)
    good = await app_client.post(
        url,
        headers=token,
        json={
            "locations": [
                location("Brussels", [charger(f"DRY-{cpo_id}-B"), charger(f"DRY-{cpo_id}-C")]),
                location("Templated", template=slug),
                location("Zoned", timezone="Europe/Paris"),
            ]
        },
    )
    assert good.status_code == 200, good.text
    assert good.json() == {
        "valid": True,
        "problems": [],
        "locations": 3,
        "chargers": 2 + template_chargers,
        "timezones_derived": 2,
        "timezones": {"Europe/Brussels": 2, "Europe/Paris": 1},
        "templates_used": {slug: 1},
    }
    # nothing written, nothing started (a workflow starts only for a job row)
    assert (await job_rows(engine, cpo_id), await table_counts(engine, cpo_id)) == before
    # a per-request callback_url needs the CPO's webhook secret
    hooked = await app_client.post(
        url, headers=token, json={"locations": [location("X")], "callback_url": "https://example.com/hook"}
    )
    assert [(p["field"], p["code"]) for p in hooked.json()["problems"]] == [
        ("callback_url", "webhook_not_configured")
    ]


async def test_dry_run_keeps_the_limits_and_takes_10000_locations(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    app_with: Any,
    engine: AsyncEngine,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    async with app_with(max_locations_per_request=2) as small:
        over = await small.post(
            f"/ocpi/cpos/{cpo_id}/locations?dry_run=true",
            headers=token,
            json={"locations": [location(f"L{i}") for i in range(3)]},
        )
        assert over.status_code == 413 and over.json()["code"] == "TOO_MANY_LOCATIONS"
    body = {"locations": [location(f"Site {i}", [charger(f"DRYBIG-{cpo_id}-{i}")]) for i in range(10_000)]}
    started = time.perf_counter()
    answer = await app_client.post(f"/ocpi/cpos/{cpo_id}/locations?dry_run=true", headers=token, json=body)
    elapsed = time.perf_counter() - started
    print(f"dry run of 10,000 locations: {elapsed:.2f} s")
    assert answer.status_code == 200, answer.text[:500]
    assert answer.json()["valid"] is True and answer.json()["chargers"] == 10_000
    assert await job_rows(engine, cpo_id) == (0, 0)
