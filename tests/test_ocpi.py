"""OCPI 2.2.1 end to end with a real eMSP on a real socket (tests/ocpi_emsp.py).

The gateway runs under uvicorn on its own port (so `ocpi_peer_url` is a URL the eMSP can call,
and our worker's pushes reach the eMSP over TCP). The eMSP knows only `token_a`, `ocpi_peer_url`
and the spec; everything served or pushed is checked by the third-party model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.app import create_app
from devstack.procs import free_port
from settings import Settings
from tests.conftest import ADMIN
from tests.helpers import charger, eventually, location, unique, wait_for_job
from tests.ocpi_emsp import FakeEmsp, check_connector, check_evse, check_location, token_header
from tests.suite_stack import running_workers, time_skipping
from workflows.ocpi_push import OcpiLocationPush

pytestmark = pytest.mark.asyncio(loop_scope="session")
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
_serial = iter(range(100, 1000))


@asynccontextmanager
async def serve_gateway(settings: Settings, client: Client) -> AsyncIterator[httpx.AsyncClient]:
    """The real app under uvicorn on its own port; a client to it over TCP."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(settings.model_copy(update={"api_url": base}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.02)
    app.state.services.temporal._client = client
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        yield http
    server.should_exit = True
    await task


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(settings: Settings, temporal: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_gateway(settings, temporal.client) as http:
        yield http


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_temporal(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[WorkflowEnvironment, httpx.AsyncClient]]:
    """A time-skipping server of its own, with its own workers and gateway: workflows that other
    tests leave waiting on a task queue nobody polls would keep the shared one from skipping."""
    async with time_skipping() as env, running_workers(env.client, settings, engine):
        async with serve_gateway(settings, env.client) as http:
            yield env, http


@pytest_asyncio.fixture(loop_scope="session")
async def emsp() -> AsyncIterator[FakeEmsp]:
    fake = FakeEmsp("NL", f"E{next(_serial) % 100:02d}")
    await fake.start()
    yield fake
    await fake.stop()


async def new_cpo(http: httpx.AsyncClient) -> dict[str, Any]:
    party = f"O{next(_serial) % 100:02d}"
    response = await http.post(
        "/ocpi/cpos",
        headers=ADMIN_H,
        json={"name": f"OCPI CPO {party}", "country_code": "BE", "party_id": party},
    )
    assert response.status_code == 201, response.text
    body = dict(response.json())
    base = str(http.base_url).rstrip("/")
    assert body["token_a"] and body["ocpi_peer_url"] == f"{base}/ocpi/cpo/{body['cpo_id']}/versions"
    body["bearer"] = {"Authorization": f"Bearer {body['token']}"}
    return body


async def provision(
    http: httpx.AsyncClient, cpo: dict[str, Any], locations: list[dict[str, Any]]
) -> list[str]:
    accepted = await http.post(
        f"/ocpi/cpos/{cpo['cpo_id']}/locations", json={"locations": locations}, headers=cpo["bearer"]
    )
    assert accepted.status_code == 202, accepted.text
    job = await wait_for_job(http, accepted.json()["status_url"], cpo["bearer"])
    assert job["status"] == "READY", job
    return list(job["results"]["location_ids"])


def pushes(emsp: FakeEmsp, location_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r.method, r.body) for r in emsp.received if r.path.endswith(f"/{location_id}")]


async def test_emsp_registers_pulls_every_page_and_receives_ready_patch_delete(
    gateway: httpx.AsyncClient,
    emsp: FakeEmsp,
    workers: list[Worker],
    engine: AsyncEngine,
) -> None:
    cpo = await new_cpo(gateway)
    handshake = await emsp.register(gateway, cpo["token_a"], cpo["ocpi_peer_url"])
    ours = handshake["credentials"]
    assert ours["roles"][0] | {"business_details": None} == {
        "role": "CPO",
        "country_code": "BE",
        "party_id": cpo["party"]["party_id"],
        "business_details": None,
    }
    assert ours["url"] == cpo["ocpi_peer_url"] and ours["token"] != cpo["token_a"]
    locations_url = handshake["endpoints"][("locations", "SENDER")]

    # token A is void now: 401 with an OCPI body, on versions and on a second registration
    reused = await gateway.get(cpo["ocpi_peer_url"], headers=emsp.headers(cpo["token_a"]))
    assert reused.status_code == 401 and reused.json()["status_code"] == 2001
    again = await gateway.post(
        handshake["endpoints"][("credentials", "SENDER")],
        json=emsp.credentials(),
        headers=emsp.headers(cpo["token_a"]),
    )
    assert again.status_code == 401
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT token_hash, their_token, status, endpoints FROM ocpp.ocpi_partners"
                    " WHERE cpo_id = :c"
                ),
                {"c": int(cpo["cpo_id"])},
            )
        ).one()
    assert row.status == "REGISTERED" and row.their_token == emsp.token_for_cpo
    assert emsp.token_to_call_cpo not in (row.token_hash, None) and len(row.token_hash) == 64  # hashed
    assert {e["identifier"] for e in row.endpoints} == {"credentials", "locations"}

    # READY: each new location is pushed (PUT), and the pages hold the same objects
    ids = await provision(
        gateway,
        cpo,
        [
            location(
                "OCPI Midi",
                [
                    charger(unique("OC-AC"), evses=2),
                    charger(unique("OC-DC"), connector_type="CCS2", max_power_kw=150),
                ],
                owner_name="STIB",
                parking_type="ON_STREET",
                facilities=["TRAIN_STATION"],
                postal_code="1060",
            ),
            location("OCPI Empty", []),
            location(
                "OCPI Gent",
                [charger(unique("OC-CH"), connector_type="CHAdeMO", max_power_kw=50)],
                city="Gent",
            ),
        ],
    )
    await eventually(lambda: all(pushes(emsp, i) for i in ids), "a push of every location")
    pulled, pages = await emsp.pull_all(gateway, f"{locations_url}?limit=2")
    assert [p.headers["x-total-count"] for p in pages] == ["3", "3"]
    assert [p.headers["x-limit"] for p in pages] == ["2", "2"]
    assert "link" in pages[0].headers and "link" not in pages[1].headers
    assert sorted(p["id"] for p in pulled) == sorted(ids)
    for obj in pulled:
        assert emsp.locations[("BE", cpo["party"]["party_id"], obj["id"])] == obj
        assert obj["country_code"] == "BE" and obj["publish"] is True
        assert obj["country"] == "BEL" and obj["time_zone"] == "Europe/Brussels"
        assert obj["coordinates"] == {"latitude": "50.835700", "longitude": "4.335300"}
    midi = next(o for o in pulled if o["id"] == ids[0])
    assert (midi["owner"], midi["parking_type"], midi["facilities"]) == (
        {"name": "STIB"},
        "ON_STREET",
        ["TRAIN_STATION"],
    )
    connectors = {c["standard"]: c for e in midi["evses"] for c in e["connectors"]}
    assert connectors["IEC_62196_T2"] | {"last_updated": None} == {
        "id": "1",
        "standard": "IEC_62196_T2",
        "format": "SOCKET",
        "power_type": "AC_3_PHASE",
        "max_voltage": 230,
        "max_amperage": 16,
        "max_electric_power": 11000,
        "last_updated": None,
    }
    assert connectors["IEC_62196_T2_COMBO"]["power_type"] == "DC"
    assert {e["status"] for e in midi["evses"]} == {"AVAILABLE"} and len(midi["evses"]) == 3
    assert all(e["evse_id"].startswith(f"BE*{cpo['party']['party_id']}*E") for e in midi["evses"])

    # one location, one EVSE, one connector; unknown ones: 404 + 2003
    token = emsp.token_to_call_cpo
    assert token is not None
    one = (await gateway.get(f"{locations_url}/{ids[0]}", headers=emsp.headers(token))).json()
    check_location(one["data"])
    assert one["data"] == midi and one["status_code"] == 1000 and one["timestamp"].endswith("Z")
    evse = midi["evses"][0]
    got_evse = (
        await gateway.get(f"{locations_url}/{ids[0]}/{evse['uid'].upper()}", headers=emsp.headers(token))
    ).json()["data"]
    check_evse(got_evse)
    assert got_evse == evse  # CiString: case-insensitive
    got_connector = (
        await gateway.get(f"{locations_url}/{ids[0]}/{evse['uid']}/1", headers=emsp.headers(token))
    ).json()["data"]
    check_connector(got_connector)
    assert got_connector == evse["connectors"][0]
    for missing in (f"{ids[0]}x", f"{ids[0]}/evs-nope", f"{ids[0]}/{evse['uid']}/9", "x" * 80):
        response = await gateway.get(f"{locations_url}/{missing}", headers=emsp.headers(token))
        assert response.status_code == 404 and response.json()["status_code"] == 2003, missing

    # PATCH: the eMSP gets a PATCH with the fields that differ from what it holds, and
    # last_updated (the derived time zone is the same, so it is not sent)
    before = len(emsp.received)
    patched = await gateway.patch(
        f"/ocpi/cpos/{cpo['cpo_id']}/locations/{ids[1]}",
        json={"name": "OCPI Empty (renamed)", "coordinates": {"latitude": 51.2172, "longitude": 4.4211}},
        headers=cpo["bearer"],
    )
    assert patched.status_code == 200
    await eventually(lambda: len(emsp.received) > before, "the next push")
    method, body = pushes(emsp, ids[1])[-1]
    assert method == "PATCH" and set(body) == {"name", "coordinates", "last_updated"}
    assert body["name"] == "OCPI Empty (renamed)" and body["coordinates"]["latitude"] == "51.217200"
    key = ("BE", cpo["party"]["party_id"], ids[1])
    assert emsp.locations[key]["last_updated"] == body["last_updated"] > midi["last_updated"][:0]

    # DELETE: the OCPPLAB API answers 404; the eMSP gets a PUT with every EVSE REMOVED
    before = len(emsp.received)
    deleted = await gateway.delete(f"/ocpi/cpos/{cpo['cpo_id']}/locations/{ids[0]}", headers=cpo["bearer"])
    assert deleted.status_code == 204
    assert (
        await gateway.get(f"/ocpi/cpos/{cpo['cpo_id']}/locations/{ids[0]}", headers=cpo["bearer"])
    ).status_code == 404
    await eventually(lambda: len(emsp.received) > before, "the next push")
    method, body = pushes(emsp, ids[0])[-1]
    assert method == "PUT" and {e["status"] for e in body["evses"]} == {"REMOVED"}
    assert body["last_updated"] > midi["last_updated"]
    still = (await gateway.get(f"{locations_url}/{ids[0]}", headers=emsp.headers(token))).json()["data"]
    assert still == body  # kept for the eMSPs, as pushed
    # the pushes of each location went in last_updated order, with our party in the headers
    for location_id in ids:
        stamps = [b["last_updated"] for _, b in pushes(emsp, location_id)]
        assert stamps == sorted(stamps)
    put = next(r for r in emsp.received if r.method == "PUT")
    assert put.headers["ocpi-from-party-id"] == cpo["party"]["party_id"]
    assert put.headers["ocpi-to-party-id"] == emsp.party_id and put.headers["x-request-id"]

    # incremental pull: date_from = the removal's last_updated gives just that location
    since, _ = await emsp.pull_all(gateway, f"{locations_url}?date_from={body['last_updated']}")
    assert [o["id"] for o in since] == [ids[0]]
    none, _ = await emsp.pull_all(gateway, f"{locations_url}?date_to=2000-01-01T00:00:00Z")
    assert none == []


async def test_an_emsp_sees_only_its_own_cpo_and_bad_input_is_an_ocpi_error(
    gateway: httpx.AsyncClient,
    emsp: FakeEmsp,
    workers: list[Worker],
) -> None:
    mine, other = await new_cpo(gateway), await new_cpo(gateway)
    handshake = await emsp.register(gateway, mine["token_a"], mine["ocpi_peer_url"])
    url = handshake["endpoints"][("locations", "SENDER")]
    token = emsp.token_to_call_cpo
    assert token is not None
    others = await provision(gateway, other, [location("Not yours", [])])
    listed, pages = await emsp.pull_all(gateway, url)
    assert listed == [] and pages[0].headers["x-total-count"] == "0"
    other_url = url.replace(f"/cpo/{mine['cpo_id']}/", f"/cpo/{other['cpo_id']}/")
    for target in (f"{other_url}/{others[0]}", other_url, other["ocpi_peer_url"]):
        response = await gateway.get(target, headers=emsp.headers(token))
        assert response.status_code == 401 and response.json()["status_code"] == 2001, target
    missing = await gateway.get(f"{url}/{others[0]}", headers=emsp.headers(token))
    assert missing.status_code == 404 and missing.json()["status_code"] == 2003

    # every answer is the envelope; request ids come back; no input is a 5xx; a request that
    # reached the OCPI layer gets HTTP 200 with its OCPI code (status_codes: 2001 for bad
    # parameters), while 401 stays an HTTP error
    ids = {"X-Request-ID": "req-1", "X-Correlation-ID": "corr-1"}
    cases = [
        (url, {"Authorization": token_header(token), **ids}, 200, 1000),
        (f"{url}?limit=0", {"Authorization": token_header(token)}, 200, 2001),
        (f"{url}?offset=-1", {"Authorization": token_header(token)}, 200, 2001),
        (f"{url}?limit=x", {"Authorization": token_header(token)}, 200, 2001),
        (f"{url}?date_from=yesterday", {"Authorization": token_header(token)}, 200, 2001),
        (url, {}, 401, 2001),
        (url, {"Authorization": "Bearer " + token}, 401, 2001),
        (url, {"Authorization": "Token %%%not-base64"}, 401, 2001),
        (url, {"Authorization": token_header(mine["token_a"])}, 401, 2001),
        (
            url.replace(f"/cpo/{mine['cpo_id']}/", "/cpo/abc/"),
            {"Authorization": token_header(token)},
            401,
            2001,
        ),
    ]
    for target, headers, http_status, code in cases:
        response = await gateway.get(target, headers=headers)
        assert response.status_code == http_status, (target, headers, response.text)
        body = response.json()
        assert body["status_code"] == code
        assert set(body) == {"data", "status_code", "status_message", "timestamp"}
        assert response.headers["x-request-id"] and response.headers["x-correlation-id"]
    echoed = await gateway.get(url, headers={"Authorization": token_header(token), **ids})
    assert (echoed.headers["x-request-id"], echoed.headers["x-correlation-id"]) == ("req-1", "corr-1")
    bad_post = await gateway.post(
        f"{mine['ocpi_peer_url'][:-9]}/2.2.1/credentials",
        content=b"{nope",
        headers={"Authorization": token_header(token), "Content-Type": "application/json"},
    )
    assert bad_post.status_code in (400, 405) and bad_post.json()["status_code"] in (2000, 2001)


async def test_credentials_update_and_unregister(
    gateway: httpx.AsyncClient,
    emsp: FakeEmsp,
    workers: list[Worker],
) -> None:
    cpo = await new_cpo(gateway)
    # PUT or DELETE before registering: 405
    creds_url = cpo["ocpi_peer_url"].replace("/versions", "/2.2.1/credentials")
    for method in ("PUT", "DELETE"):
        response = await gateway.request(
            method, creds_url, json=emsp.credentials(), headers=emsp.headers(cpo["token_a"])
        )
        assert response.status_code == 405 and response.json()["status_code"] == 2000, method
    await emsp.register(gateway, cpo["token_a"], cpo["ocpi_peer_url"])
    first = emsp.token_to_call_cpo
    assert first is not None
    # POST again with the registered token: 405
    again = await gateway.post(creds_url, json=emsp.credentials(), headers=emsp.headers(first))
    assert again.status_code == 405
    got = (await gateway.get(creds_url, headers=emsp.headers(first))).json()["data"]
    assert got["token"] == first and got["url"] == cpo["ocpi_peer_url"]
    # PUT: new endpoints fetched, a new token replaces the old one
    emsp.token_for_cpo = "rotated-" + emsp.token_for_cpo
    updated = await gateway.put(creds_url, json=emsp.credentials(), headers=emsp.headers(first))
    assert updated.status_code == 200, updated.text
    second = updated.json()["data"]["token"]
    assert second != first
    assert (await gateway.get(cpo["ocpi_peer_url"], headers=emsp.headers(first))).status_code == 401
    assert (await gateway.get(cpo["ocpi_peer_url"], headers=emsp.headers(second))).status_code == 200
    emsps = (await gateway.get(f"/ocpi/cpos/{cpo['cpo_id']}/emsps", headers=cpo["bearer"])).json()
    assert [(e["party_id"], e["status"]) for e in emsps] == [(emsp.party_id, "REGISTERED")]
    # DELETE: unregistered, the token is dead
    gone = await gateway.delete(creds_url, headers=emsp.headers(second))
    assert gone.status_code == 200 and gone.json()["status_code"] == 1000
    assert (await gateway.get(cpo["ocpi_peer_url"], headers=emsp.headers(second))).status_code == 401
    # an unreachable eMSP during POST: 3001, and the (new) token A is not spent
    fresh = (await gateway.post(f"/ocpi/cpos/{cpo['cpo_id']}/token_a", headers=ADMIN_H)).json()
    by_cpo = await gateway.post(f"/ocpi/cpos/{cpo['cpo_id']}/token_a", headers=cpo["bearer"])
    assert by_cpo.status_code == 403  # issuing token A is the admin's
    broken = {**emsp.credentials(), "url": "http://127.0.0.1:9/ocpi/versions"}
    failed = await gateway.post(creds_url, json=broken, headers=emsp.headers(fresh["token_a"]))
    assert failed.status_code == 200 and failed.json()["status_code"] == 3001  # in the envelope
    unspent = await gateway.get(cpo["ocpi_peer_url"], headers=emsp.headers(fresh["token_a"]))
    assert unspent.status_code == 200


async def test_cpo_registers_with_an_emsp_and_pushes_survive_an_hour_down(
    own_temporal: tuple[WorkflowEnvironment, httpx.AsyncClient],
    emsp: FakeEmsp,
) -> None:
    """We register with the eMSP from its versions URL and token A (CPO as client); then the
    eMSP goes down for an hour: the pushes retry with backoff and all arrive once it is back."""
    temporal, gateway = own_temporal
    cpo = await new_cpo(gateway)
    registered = await gateway.post(
        f"/ocpi/cpos/{cpo['cpo_id']}/emsps",
        headers=cpo["bearer"],
        json={"versions_url": f"{emsp.base}/ocpi/versions", "token_a": emsp.token_a},
    )
    assert registered.status_code == 201, registered.text
    assert (registered.json()["party_id"], registered.json()["status"]) == (emsp.party_id, "REGISTERED")
    assert emsp.token_to_call_cpo and emsp.cpo_versions_url == cpo["ocpi_peer_url"]
    bad = await gateway.post(
        f"/ocpi/cpos/{cpo['cpo_id']}/emsps",
        headers=cpo["bearer"],
        json={"versions_url": f"{emsp.base}/ocpi/versions", "token_a": "wrong"},
    )
    assert bad.status_code == 422 and bad.json()["code"] == "EMSP_REGISTRATION_FAILED"

    emsp.down = True
    ids = await provision(
        gateway, cpo, [location("Down 1", [charger(unique("DOWN"))]), location("Down 2", [])]
    )
    patched = await gateway.patch(
        f"/ocpi/cpos/{cpo['cpo_id']}/locations/{ids[0]}", json={"name": "Down 1b"}, headers=cpo["bearer"]
    )
    assert patched.status_code == 200
    partner_id = registered.json()["id"]
    handles = [
        temporal.client.get_workflow_handle_for(OcpiLocationPush.run, f"ocpi-push/{partner_id}/{i}")
        for i in ids
    ]
    for _ in range(12):  # an hour of 503s, retried with backoff (skipped in steps: short RPCs)
        await temporal.sleep(300)
    assert emsp.locations == {}
    for handle in handles:  # still trying, backing off: no limit on attempts
        pending = (await handle.describe()).raw_description.pending_activities
        assert len(pending) == 1 and pending[0].attempt >= 5, pending
        assert "HTTP 503" in pending[0].last_failure.message
    emsp.down = False
    for _ in range(30):  # the next attempt comes within the capped backoff (skipped through)
        if len(emsp.locations) == 2:
            break
        await temporal.sleep(60)
    assert len(emsp.locations) == 2
    for handle in handles:
        for _ in range(20):  # skip through the idle wait until the push workflow ends
            if (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED:
                break
            await temporal.sleep(600)
        summary = await handle.result()
        assert summary.pushes == 1 and summary.rejected == 0, summary
    current, _ = await emsp.pull_all(gateway, cpo["ocpi_peer_url"].replace("/versions", "/2.2.1/locations"))
    by_id = {o["id"]: o for o in current}
    for location_id in ids:
        assert emsp.locations[("BE", cpo["party"]["party_id"], location_id)] == by_id[location_id]
    assert by_id[ids[0]]["name"] == "Down 1b"  # the later PATCH arrived, folded into one PUT
