"""The product's main job end to end: POST → 202 → workflow → rows + ECS tasks → READY."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from settings import Settings
from tests.helpers import (
    charger,
    create_cpo,
    expected_counts,
    location,
    running_tasks,
    submit,
    table_counts,
    wait_for_job,
)


async def test_job_of_several_locations_reaches_ready(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    ecs: Any,
    settings: Settings,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    locations = [
        location("Brussels Midi Hub", [charger("BXL-MIDI-1"), charger("BXL-MIDI-2", evses=2)]),
        location(
            "Gent Sint-Pieters",
            [charger("GENT-1", connector_type="CCS2", max_power_kw=150, ocpp_version="OCPP2.0.1")],
            country="BEL",
            postal_code="9000",
            timezone="Europe/Brussels",
        ),
        location("Antwerpen Retail", template="mixed-retail"),
        location(
            "Liège parking, no chargers yet",
            [],
            owner_name="Ville de Liège",
            parking_type="PARKING_LOT",
            facilities=["MALL", "WIFI"],
        ),
    ]
    accepted = await submit(app_client, cpo_id, token, locations)
    assert accepted["status"] == "PROVISIONING"
    assert accepted["job_id"].startswith("job-")
    assert accepted["status_url"] == f"/ocpi/cpos/{cpo_id}/locations/jobs/{accepted['job_id']}"
    assert accepted["workflow_run_id"]

    job = await wait_for_job(app_client, accepted["status_url"], token)

    assert job["status"] == "READY", job
    assert job["error"] is None
    assert job["progress"] == {"total": 4, "succeeded": 4, "failed": 0, "in_progress": 0}
    assert job["provisioned_at"] is not None
    results = job["results"]
    assert [loc["index"] for loc in results["locations"]] == [0, 1, 2, 3]
    assert all(loc["status"] == "READY" and loc["error"] is None for loc in results["locations"])
    assert len(results["location_ids"]) == 4 == len(set(results["location_ids"]))
    assert all(len(i) == 36 and i.startswith("loc-") for i in results["location_ids"])
    # mixed-retail: 2 AC chargers + 1 DC, one EVSE each
    assert await table_counts(engine, cpo_id) == expected_counts([[1, 2], [1], [1, 1, 1], []])

    # exactly one RUNNING task per charger, tagged back to its deployment
    charger_ids = [c for loc in results["locations"] for c in loc["charger_ids"]]
    assert len(charger_ids) == 6
    for dep_id in charger_ids:
        tasks = running_tasks(ecs, settings.ecs_cluster, dep_id)
        assert len(tasks) == 1, dep_id
        tags = {t["key"]: t["value"] for t in tasks[0]["tags"]}
        assert tags["ocpplab:deployment-id"] == dep_id
        assert tags["ocpplab:job-id"] == accepted["job_id"]
    async with engine.connect() as conn:
        states = (
            await conn.execute(
                text(
                    "SELECT d.state, t.last_status FROM ocpp.charger_deployments d"
                    " JOIN ocpp.ecs_tasks t ON t.deployment_id = d.id WHERE d.id = ANY(:ids)"
                ),
                {"ids": charger_ids},
            )
        ).all()
        assert sorted(states) == [("RUNNING", "RUNNING")] * 6
        row = (
            await conn.execute(
                text(
                    "SELECT country, country_code, party_id, latitude, longitude, time_zone, publish, status,"
                    " to_char(last_updated AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                    " FROM ocpp.ocpi_locations WHERE id = :id"
                ),
                {"id": results["location_ids"][0]},
            )
        ).one()
    country, country_code, party_id, *rest = row
    assert (country, country_code, len(party_id)) == ("BEL", "BE", 3)
    assert rest[:5] == ["50.835700", "4.335300", "Europe/Brussels", True, "ACTIVE"]
    assert rest[5].endswith("Z")

    # the location reads back with its chargers
    first = results["locations"][0]
    got = await app_client.get(f"/ocpi/cpos/{cpo_id}/locations/{first['location_id']}", headers=token)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["name"] == "Brussels Midi Hub"
    assert body["country"] == "BE"
    assert body["coordinates"] == {"latitude": 50.8357, "longitude": 4.3353}
    assert body["timezone"] == "Europe/Brussels"
    assert [c["identity"] for c in body["chargers"]] == ["BXL-MIDI-1", "BXL-MIDI-2"]
    assert [c["id"] for c in body["chargers"]] == first["charger_ids"]
    assert all(c["status"] == "RUNNING" for c in body["chargers"])


async def test_the_web_ui_shows_each_workflows_progress(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    temporal: WorkflowEnvironment,
) -> None:
    """Current details (what the Web UI shows on a workflow's page) and query descriptions."""
    cpo_id, token = await create_cpo(app_client, admin)
    accepted = await submit(app_client, cpo_id, token, [location("Details A", []), location("Details B", [])])
    job = await wait_for_job(app_client, accepted["status_url"], token)
    assert job["status"] == "READY"
    metadata = "__temporal_workflow_metadata"  # what the Web UI reads
    parent = await temporal.client.get_workflow_handle(accepted["job_id"]).query(metadata)
    child = await temporal.client.get_workflow_handle(f"{accepted['job_id']}/location-1").query(metadata)
    assert parent.current_details.startswith("**READY**: 2 READY, 0 failed or cancelled, 0 in progress, of 2")
    assert "run 1 of the continue-as-new chain" in parent.current_details
    assert child.current_details == "**ready**"
    queries = {q.name: q.description for q in parent.definition.query_definitions}
    assert "live counts" in queries["status"]
