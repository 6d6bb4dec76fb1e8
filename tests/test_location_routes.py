"""List, get, patch and delete of provisioned locations, and the template catalog."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.worker import Worker

from settings import Settings
from tests.helpers import (
    all_tasks_started_by,
    charger,
    create_cpo,
    expected_counts,
    location,
    running_tasks,
    submit,
    table_counts,
    unique,
    wait_for_job,
)


async def provisioned(
    client: httpx.AsyncClient, admin: dict[str, str], locations: list[dict[str, Any]]
) -> tuple[str, dict[str, str], dict[str, Any]]:
    cpo_id, token = await create_cpo(client, admin)
    accepted = await submit(client, cpo_id, token, locations)
    job = await wait_for_job(client, accepted["status_url"], token)
    assert job["status"] == "READY", job
    return cpo_id, token, job


async def test_list_pages_are_stable_and_bounded(
    app_client: httpx.AsyncClient, admin: dict[str, str], workers: list[Worker]
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    empty = await app_client.get(f"/ocpi/cpos/{cpo_id}/locations", headers=token)
    assert empty.status_code == 200
    assert empty.json() == {"data": [], "total": 0, "page": 1, "limit": 50}

    accepted = await submit(
        app_client,
        cpo_id,
        token,
        [location(f"Paged {i}", [charger(f"PAGE-{cpo_id}-{i}")] if i == 0 else []) for i in range(5)],
    )
    job = await wait_for_job(app_client, accepted["status_url"], token)
    ids = job["results"]["location_ids"]

    seen: list[str] = []
    for page in (1, 2, 3):
        body = (
            await app_client.get(f"/ocpi/cpos/{cpo_id}/locations?page={page}&limit=2", headers=token)
        ).json()
        assert body["total"] == 5 and body["page"] == page and body["limit"] == 2
        seen += [loc["id"] for loc in body["data"]]
        assert len(body["data"]) == (2 if page < 3 else 1)
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 5
    first = (await app_client.get(f"/ocpi/cpos/{cpo_id}/locations?limit=100", headers=token)).json()
    with_chargers = [loc for loc in first["data"] if loc["chargers"]]
    assert [c["identity"] for c in with_chargers[0]["chargers"]] == [f"PAGE-{cpo_id}-0"]
    beyond = (await app_client.get(f"/ocpi/cpos/{cpo_id}/locations?page=9", headers=token)).json()
    assert beyond["data"] == [] and beyond["total"] == 5
    for bad in ("limit=0", "limit=101", "page=0", "page=x"):
        response = await app_client.get(f"/ocpi/cpos/{cpo_id}/locations?{bad}", headers=token)
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == bad.split("=")[0]


async def test_patch_changes_only_the_fields_sent_and_moves_last_updated(
    app_client: httpx.AsyncClient, admin: dict[str, str], workers: list[Worker], engine: AsyncEngine
) -> None:
    cpo_id, token, job = await provisioned(
        app_client,
        admin,
        [
            location("Before", [charger(unique("PATCH"))], postal_code="1060"),
        ],
    )
    location_id = job["results"]["location_ids"][0]
    url = f"/ocpi/cpos/{cpo_id}/locations/{location_id}"
    before = (await app_client.get(url, headers=token)).json()

    async def last_updated() -> Any:
        async with engine.connect() as conn:
            return (
                await conn.execute(
                    text("SELECT last_updated FROM ocpp.ocpi_locations WHERE id = :i"), {"i": location_id}
                )
            ).scalar_one()

    stamp = await last_updated()
    edits: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"name": "After"}, {"name": "After"}),
        ({"address": "Rue Neuve 2"}, {"address": "Rue Neuve 2"}),
        ({"city": "Bruxelles"}, {"city": "Bruxelles"}),
        ({"postal_code": "1000"}, {"postal_code": "1000"}),
        ({"postal_code": None}, {"postal_code": None}),
        ({"state": "Brussels-Capital"}, {"state": "Brussels-Capital"}),
        ({"country": "NLD"}, {"country": "NL"}),
        ({"public": False}, {"public": False}),
        ({"owner_name": "STIB"}, {"owner_name": "STIB"}),
        ({"timezone": "Europe/Amsterdam"}, {"timezone": "Europe/Amsterdam"}),
        (
            {"coordinates": {"latitude": 40.7128, "longitude": -74.006}},
            {"coordinates": {"latitude": 40.7128, "longitude": -74.006}, "timezone": "America/New_York"},
        ),
        ({"parking_type": "ON_STREET", "facilities": ["CAFE"]}, {}),
    ]
    current = before
    for patch, expected in edits:
        response = await app_client.patch(url, json=patch, headers=token)
        assert response.status_code == 200, (patch, response.text)
        body = response.json()
        changed = {k for k in body if body[k] != current[k]} - {"updated_at"}
        assert changed == set(expected), (patch, changed)
        for key, value in expected.items():
            assert body[key] == value, key
        assert body["updated_at"] > current["updated_at"]
        current = body
        new_stamp = await last_updated()
        assert new_stamp > stamp
        stamp = new_stamp
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT l.country, l.latitude, l.parking_type, l.facilities, o.name, o.timezone"
                    " FROM ocpp.ocpi_locations l JOIN ocpp.locations o ON o.ocpi_location_id = l.id"
                    " WHERE l.id = :i"
                ),
                {"i": location_id},
            )
        ).one()
    assert tuple(row) == ("NLD", "40.712800", "ON_STREET", ["CAFE"], "After", "America/New_York")

    for bad, field in (
        ({"name": None}, "name"),
        ({"country": "XX"}, "country"),
        ({"chargers": []}, "chargers"),
        ({"coordinates": {"latitude": 91, "longitude": 0}}, "coordinates.latitude"),
    ):
        response = await app_client.patch(url, json=bad, headers=token)
        assert response.status_code == 422, bad
        assert field in [e["field"] for e in response.json()["errors"]]
    missing = await app_client.patch(
        f"/ocpi/cpos/{cpo_id}/locations/loc-nope", json={"name": "x"}, headers=token
    )
    assert missing.status_code == 404 and missing.json()["code"] == "LOCATION_NOT_FOUND"


async def test_delete_stops_tasks_keeps_ocpi_rows_removed_and_is_idempotent(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    ecs: Any,
    settings: Settings,
) -> None:
    """OCPI never deletes: the location and its EVSEs stay as REMOVED (for the eMSPs), its OCPP
    rows go, its tasks stop, and the OCPPLAB routes answer 404 for it."""
    identities = [unique("DEL-KEEP"), unique("DEL-A"), unique("DEL-B")]
    cpo_id, token, job = await provisioned(
        app_client,
        admin,
        [
            location("Stays", [charger(identities[0])]),
            location("Goes", [charger(identities[1], evses=2), charger(identities[2])]),
        ],
    )
    keep, goes = job["results"]["locations"]
    url = f"/ocpi/cpos/{cpo_id}/locations/{goes['location_id']}"

    async def ocpi_state() -> tuple[str, Any, list[str]]:
        async with engine.connect() as conn:
            status, stamp = (
                await conn.execute(
                    text("SELECT status, last_updated FROM ocpp.ocpi_locations WHERE id = :i"),
                    {"i": goes["location_id"]},
                )
            ).one()
            evses = (
                (
                    await conn.execute(
                        text("SELECT status FROM ocpp.ocpi_evses WHERE location_id = :i ORDER BY uid"),
                        {"i": goes["location_id"]},
                    )
                )
                .scalars()
                .all()
            )
        return status, stamp, list(evses)

    before = await ocpi_state()
    assert before[0] == "ACTIVE" and before[2] == ["AVAILABLE"] * 3
    response = await app_client.delete(url, headers=token)
    assert response.status_code == 204, response.text
    assert (await app_client.get(url, headers=token)).status_code == 404
    patched = await app_client.patch(url, json={"name": "back"}, headers=token)
    assert patched.status_code == 404 and patched.json()["code"] == "LOCATION_NOT_FOUND"
    listed = (await app_client.get(f"/ocpi/cpos/{cpo_id}/locations", headers=token)).json()
    assert [loc["id"] for loc in listed["data"]] == [keep["location_id"]] and listed["total"] == 1
    after = await ocpi_state()
    assert after[0] == "REMOVED" and after[2] == ["REMOVED"] * 3 and after[1] > before[1]
    assert await table_counts(engine, cpo_id) == expected_counts([[1]], removed=[[2, 1]])
    for dep_id in goes["charger_ids"]:
        assert running_tasks(ecs, settings.ecs_cluster, dep_id) == []
        assert len(all_tasks_started_by(ecs, settings.ecs_cluster, dep_id)) == 1
    assert len(running_tasks(ecs, settings.ecs_cluster, keep["charger_ids"][0])) == 1

    again = await app_client.delete(url, headers=token)
    assert again.status_code == 204
    assert await table_counts(engine, cpo_id) == expected_counts([[1]], removed=[[2, 1]])
    assert await ocpi_state() == after  # nothing moved: the second DELETE did nothing

    # the identities of removed chargers can be used again
    reused = await submit(app_client, cpo_id, token, [location("Again", [charger(identities[1])])])
    assert (await wait_for_job(app_client, reused["status_url"], token))["status"] == "READY"


async def test_template_catalog_and_a_templated_location(
    app_client: httpx.AsyncClient, admin: dict[str, str], workers: list[Worker], engine: AsyncEngine
) -> None:
    response = await app_client.get("/ocpp/templates/locations", headers=admin)
    assert response.status_code == 200
    catalog = {t["slug"]: t for t in response.json()}
    assert {"urban-ac", "highway-dc", "mixed-retail"} <= set(catalog)
    assert catalog["highway-dc"]["chargers"] == 8
    assert {g["connector_type"] for g in catalog["mixed-retail"]["charger_groups"]} == {"Type2", "CHAdeMO"}
    assert (await app_client.get("/ocpp/templates/locations")).status_code == 401

    cpo_id, token, job = await provisioned(app_client, admin, [location("Urban", template="urban-ac")])
    body = (
        await app_client.get(
            f"/ocpi/cpos/{cpo_id}/locations/{job['results']['location_ids'][0]}", headers=token
        )
    ).json()
    assert [c["connector_type"] for c in body["chargers"]] == ["Type2"] * 4
    # urban-ac: 4 chargers with 2 EVSEs each
    assert await table_counts(engine, cpo_id) == expected_counts([[2, 2, 2, 2]])


async def test_text_with_backslashes_quotes_and_accents_round_trips(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
) -> None:
    """The job's input rows are streamed with COPY: its escaping must not alter any text."""
    name = 'Gare \\ "Centrale" \\n Bruxelles-Midi \\u00e9 Ünïcödé ☕ \\\\'
    address = "Rue d'Égmont 7 \\ back"
    cpo_id, token, job = await provisioned(
        app_client,
        admin,
        [
            location(name, [], address=address, city="Saint-Gilles \\ Sint-Gillis"),
        ],
    )
    location_id = job["results"]["location_ids"][0]
    assert job["results"]["locations"][0]["name"] == name
    got = (await app_client.get(f"/ocpi/cpos/{cpo_id}/locations/{location_id}", headers=token)).json()
    assert (got["name"], got["address"], got["city"]) == (name, address, "Saint-Gilles \\ Sint-Gillis")
