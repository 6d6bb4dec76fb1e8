"""An eMSP's copy of a location always converges to what our Sender serves.

A test eMSP on a real socket (tests/ocpi_emsp.py) applies our pushes as OCPI 2.2.1 says (a PUT
replaces the object, a PATCH replaces the top-level fields it carries); it can be switched down
(503) and can refuse PATCHes. After any sequence of changes, outages, refusals and worker
crashes, its copy must equal GET on our Sender, `last_updated` included. The backoffs of the
pushes run on a time-skipping server of this module's own.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

import api.location_changes
from activities.ocpi_push import OcpiPushActivities
from api.app import create_app
from db.engine import make_sessionmaker
from db.ocpi_clock import stamp_visible_change
from settings import Settings
from tests.fault_proxy import Fault, FaultProxy
from tests.helpers import charger, location, unique, wait_for_job
from tests.ocpi_emsp import FakeEmsp, check_location
from tests.suite_stack import running_workers, time_skipping
from tests.test_ocpi import new_cpo, provision, serve_gateway

pytestmark = pytest.mark.asyncio(loop_scope="session")
_serial = iter(range(200, 10_000))


@dataclass
class Stack:
    """A time-skipping server with its workers, and the gateway on a port."""

    env: WorkflowEnvironment
    gateway: httpx.AsyncClient


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Stack]:
    async with time_skipping() as env, running_workers(env.client, settings, engine):
        async with serve_gateway(settings, env.client) as http:
            yield Stack(env, http)


@pytest_asyncio.fixture(loop_scope="session")
async def emsp() -> AsyncIterator[FakeEmsp]:
    fake = FakeEmsp("NL", f"C{next(_serial) % 100:02d}")
    await fake.start()
    yield fake
    await fake.stop()


@dataclass
class Party:
    """A CPO with one registered eMSP (we registered with it: it has a Locations Receiver)."""

    cpo: dict[str, Any]
    emsp: FakeEmsp
    sender: str  # our Locations Sender URL

    def key(self, location_id: str) -> tuple[str, str, str]:
        return ("BE", self.cpo["party"]["party_id"], location_id)

    def url(self, location_id: str) -> str:
        return f"/ocpi/cpos/{self.cpo['cpo_id']}/locations/{location_id}"


async def party(stack: Stack, emsp: FakeEmsp) -> Party:
    cpo = await new_cpo(stack.gateway)
    registered = await stack.gateway.post(
        f"/ocpi/cpos/{cpo['cpo_id']}/emsps",
        headers=cpo["bearer"],
        json={"versions_url": f"{emsp.base}/ocpi/versions", "token_a": emsp.token_a},
    )
    assert registered.status_code == 201, registered.text
    return Party(cpo, emsp, cpo["ocpi_peer_url"].replace("/versions", "/2.2.1/locations"))


async def _get(p: Party, location_id: str) -> dict[str, Any]:
    """GET of one location on our Sender, as the eMSP would."""
    assert p.emsp.token_to_call_cpo is not None
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(
            f"{p.sender}/{location_id}", headers=p.emsp.headers(p.emsp.token_to_call_cpo)
        )
    assert response.status_code == 200 and response.json()["status_code"] == 1000, response.text
    obj: dict[str, Any] = response.json()["data"]
    check_location(obj)
    return obj


async def differences(p: Party, ids: list[str]) -> dict[str, tuple[Any, Any]]:
    """Per location whose copy differs: (what the eMSP holds, what we serve), fields that differ."""
    out: dict[str, tuple[Any, Any]] = {}
    for location_id in ids:
        ours = await _get(p, location_id)
        theirs = p.emsp.locations.get(p.key(location_id))
        if theirs != ours:
            keys = sorted({*ours, *(theirs or {})})
            out[location_id] = (
                {k: (theirs or {}).get(k) for k in keys if (theirs or {}).get(k) != ours.get(k)},
                {k: ours.get(k) for k in keys if (theirs or {}).get(k) != ours.get(k)},
            )
    return out


async def settle(stack: Stack, p: Party, ids: list[str], rounds: int = 40) -> None:
    """Skip time through the pushes' backoff until the eMSP's copies equal what we serve, then
    a while longer: no late push may undo it."""
    for _ in range(rounds):
        if not await differences(p, ids):
            break
        await stack.env.sleep(30)
    for _ in range(3):
        await stack.env.sleep(300)
    left = await differences(p, ids)
    assert not left, left


# ------------------------------------------------------------------------ the named cases


async def test_two_patches_and_a_delete_during_an_outage_converge(stack: Stack, emsp: FakeEmsp) -> None:
    """The report's case: X gets PATCH name, then PATCH city; Y gets PATCH name, then DELETE;
    all while the eMSP answers 503. Before, X kept its old city and Y its AVAILABLE EVSEs."""
    p = await party(stack, emsp)
    ids = await provision(
        stack.gateway,
        p.cpo,
        [
            location("Outage X", [charger(unique("CNV-X"))]),
            location("Outage Y", [charger(unique("CNV-Y"), evses=2)]),
        ],
    )
    x, y = ids
    await settle(stack, p, ids)
    emsp.down = True
    bearer = p.cpo["bearer"]
    assert (
        await stack.gateway.patch(p.url(x), json={"name": "X renamed"}, headers=bearer)
    ).status_code == 200
    await asyncio.sleep(1.5)
    assert (await stack.gateway.patch(p.url(x), json={"city": "Gent"}, headers=bearer)).status_code == 200
    assert (
        await stack.gateway.patch(p.url(y), json={"name": "Y renamed"}, headers=bearer)
    ).status_code == 200
    assert (await stack.gateway.delete(p.url(y), headers=bearer)).status_code == 204
    await stack.env.sleep(15)
    emsp.down = False
    await settle(stack, p, ids)
    assert emsp.locations[p.key(x)]["name"] == "X renamed" and emsp.locations[p.key(x)]["city"] == "Gent"
    assert {e["status"] for e in emsp.locations[p.key(y)]["evses"]} == {"REMOVED"}
    assert emsp.locations[p.key(y)]["name"] == "Y renamed"


async def test_a_refused_patch_is_followed_by_a_put_of_the_whole_object(
    stack: Stack,
    emsp: FakeEmsp,
) -> None:
    p = await party(stack, emsp)
    (x,) = await provision(stack.gateway, p.cpo, [location("Strict", [])])
    await settle(stack, p, [x])
    emsp.refuse_patches = 1
    before = len(emsp.received)
    answer = await stack.gateway.patch(
        p.url(x), json={"name": "Strict 2", "postal_code": "1000"}, headers=p.cpo["bearer"]
    )
    assert answer.status_code == 200
    await settle(stack, p, [x])
    methods = [r.method for r in emsp.received[before:]]
    assert methods[:2] == ["PATCH", "PUT"], methods  # refused, then the whole object
    # clearing a field: a PATCH cannot say it without a null, so it goes as a PUT
    before = len(emsp.received)
    answer = await stack.gateway.patch(p.url(x), json={"postal_code": None}, headers=p.cpo["bearer"])
    assert answer.status_code == 200
    await settle(stack, p, [x])
    assert [r.method for r in emsp.received[before:]] == ["PUT"]
    assert "postal_code" not in emsp.locations[p.key(x)]


# ------------------------------------------------------------------------ randomized


def crash_next_push(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next push is sent, then its attempt dies before what was sent is recorded."""
    real = OcpiPushActivities._delivered

    async def dies_once(self: OcpiPushActivities, *args: Any) -> None:
        monkeypatch.setattr(OcpiPushActivities, "_delivered", real)
        raise RuntimeError("worker killed after the send")

    monkeypatch.setattr(OcpiPushActivities, "_delivered", dies_once)


def random_patch(rng: random.Random) -> dict[str, Any]:
    choices: dict[str, Any] = {
        "name": lambda: f"Name {rng.randrange(10**6)}",
        "city": lambda: rng.choice(["Gent", "Brugge", "Leuven", "Namur"]),
        "address": lambda: f"Street {rng.randrange(1, 200)}",
        "postal_code": lambda: rng.choice([None, "1000", "9000"]),
        "state": lambda: rng.choice([None, "VL", "WA"]),
        "owner_name": lambda: rng.choice([None, "STIB", "NMBS"]),
        "parking_type": lambda: rng.choice([None, "ON_STREET", "PARKING_LOT"]),
        "facilities": lambda: rng.choice([None, ["CAFE"], ["TRAIN_STATION", "CAFE"]]),
        "twentyfourseven": lambda: rng.choice([None, True, False]),
        "public": lambda: rng.choice([True, False]),
        "coordinates": lambda: {
            "latitude": round(50.8 + rng.random() / 10, 6),
            "longitude": round(4.3 + rng.random() / 10, 6),
        },
    }
    return {k: choices[k]() for k in rng.sample(sorted(choices), rng.randint(1, 3))}


@pytest.mark.parametrize("seed", range(int(os.environ.get("CONVERGENCE_SEEDS", "6"))))
async def test_any_sequence_of_changes_outages_refusals_and_crashes_converges(
    stack: Stack,
    emsp: FakeEmsp,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "crash": the next push reaches the eMSP but its worker dies before recording it (the
    activity fails after the send; Temporal runs it again, as after a kill)."""
    rng = random.Random(seed)
    p = await party(stack, emsp)
    ids = await provision(
        stack.gateway,
        p.cpo,
        [
            location(f"Seed {seed} A", [charger(unique("RND"))]),
            location(f"Seed {seed} B", []),
            location(f"Seed {seed} C", []),
        ],
    )
    deleted: set[str] = set()
    log: list[str] = []
    for _ in range(30):
        op = rng.choices(
            ["patch", "down", "up", "refuse", "skip", "crash", "delete"], weights=[50, 8, 8, 10, 10, 8, 3]
        )[0]
        live = [i for i in ids if i not in deleted]
        if op == "patch" and live:
            target, body = rng.choice(live), random_patch(rng)
            answer = await stack.gateway.patch(p.url(target), json=body, headers=p.cpo["bearer"])
            assert answer.status_code in (200, 202), answer.text
            log.append(f"PATCH {target[-4:]} {sorted(body)}")
        elif op == "down":
            emsp.down = True
        elif op == "up":
            emsp.down = False
        elif op == "refuse":
            emsp.refuse_patches = rng.randint(1, 3)
        elif op == "skip":
            await stack.env.sleep(rng.choice([1, 5, 30, 120]))
        elif op == "crash":
            crash_next_push(monkeypatch)
        elif op == "delete" and len(live) > 1:
            target = rng.choice(live)
            assert (await stack.gateway.delete(p.url(target), headers=p.cpo["bearer"])).status_code in (
                202,
                204,
            )
            deleted.add(target)
        log.append(op)
    emsp.down, emsp.refuse_patches = False, 0
    try:
        await settle(stack, p, ids)
    except AssertionError:
        print(f"seed {seed}: {log}")
        raise
    for target in deleted:
        assert {e["status"] for e in emsp.locations[p.key(target)]["evses"]} <= {"REMOVED"}


# ------------------------------------------------------------------------ clocks and pulls


async def test_patches_through_apis_whose_clocks_differ_are_all_applied(
    stack: Stack,
    emsp: FakeEmsp,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two API processes, the second's clock an hour behind: its PATCH, accepted after the
    first's, is applied after it (arrival order), not refused as older."""
    p = await party(stack, emsp)
    (x,) = await provision(stack.gateway, p.cpo, [location("Clocks", [])])

    class Behind(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) - timedelta(hours=1)

    apps = [create_app(settings, temporal_client=stack.env.client) for _ in range(2)]
    async with apps[0].router.lifespan_context(apps[0]), apps[1].router.lifespan_context(apps[1]):
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://api.test") for a in apps
        ]
        first = await clients[0].patch(p.url(x), json={"name": "From the first API"}, headers=p.cpo["bearer"])
        monkeypatch.setattr(api.location_changes, "datetime", Behind, raising=False)  # the second host
        second = await clients[1].patch(
            p.url(x), json={"name": "From the second API"}, headers=p.cpo["bearer"]
        )
        monkeypatch.undo()
        for c in clients:
            await c.aclose()
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    assert second.json()["name"] == "From the second API"
    assert (await _get(p, x))["name"] == "From the second API"
    await settle(stack, p, [x])


async def test_a_pull_waits_for_a_change_stamped_before_it(
    stack: Stack,
    emsp: FakeEmsp,
    engine: AsyncEngine,
) -> None:
    """A change stamped but not yet committed when a pull starts is in that pull: the pull waits
    for its commit. So `date_from` = the largest last_updated seen never skips a change."""
    p = await party(stack, emsp)
    (x,) = await provision(stack.gateway, p.cpo, [location("Barrier", [])])
    cpo_id = int(p.cpo["cpo_id"])
    pulled, _ = await emsp.pull_all(stack.gateway, p.sender)
    seen = max(o["last_updated"] for o in pulled)
    sessions = make_sessionmaker(engine)
    async with sessions() as session, session.begin():
        stamp = await stamp_visible_change(session, cpo_id)
        await session.execute(
            text(
                "UPDATE ocpp.ocpi_locations SET name = 'Stamped', last_updated = :s,"
                " version = version + 1 WHERE id = :i"
            ),
            {"s": stamp, "i": x},
        )
        pull = asyncio.create_task(emsp.pull_all(stack.gateway, f"{p.sender}?date_from={seen}"))
        await asyncio.sleep(0.5)
        assert not pull.done()  # waiting for this commit, not answering without it
    found, _ = await pull
    assert [o["name"] for o in found] == ["Stamped"] and found[0]["last_updated"] >= seen


# ------------------------------------------------------------------------ no ghosts


async def held_in_provisioning(
    stack: Stack, fault_proxy: FaultProxy, p: Party, name: str
) -> tuple[dict[str, Any], str]:
    """A job whose one location's RunTask is throttled for as long as the fault is armed."""
    identity = unique("GHOST")
    fault_proxy.arm(Fault("RunTask", "throttle", body_contains=identity))
    accepted = await stack.gateway.post(
        f"/ocpi/cpos/{p.cpo['cpo_id']}/locations",
        headers=p.cpo["bearer"],
        json={"locations": [location(name, [charger(identity)])]},
    )
    assert accepted.status_code == 202, accepted.text
    return dict(accepted.json()), identity


async def test_a_location_whose_provisioning_fails_is_never_shown_to_an_emsp(
    stack: Stack,
    emsp: FakeEmsp,
    fault_proxy: FaultProxy,
    engine: AsyncEngine,
) -> None:
    p = await party(stack, emsp)
    job, identity = await held_in_provisioning(stack, fault_proxy, p, "Doomed")
    await wait_rows(engine, job["job_id"])
    pulled, _ = await emsp.pull_all(stack.gateway, p.sender)
    assert pulled == []  # still provisioning: not served
    fault_proxy.clear()
    fault_proxy.arm(Fault("RunTask", "capacity", body_contains=identity))
    final = await wait_for_job(stack.gateway, job["status_url"], p.cpo["bearer"])
    assert final["status"] == "FAILED", final
    await never_shown(stack, p)


async def test_a_location_of_a_cancelled_job_is_never_shown_to_an_emsp(
    stack: Stack,
    emsp: FakeEmsp,
    fault_proxy: FaultProxy,
    engine: AsyncEngine,
) -> None:
    p = await party(stack, emsp)
    job, _ = await held_in_provisioning(stack, fault_proxy, p, "Cancelled")
    await wait_rows(engine, job["job_id"])
    pulled, _ = await emsp.pull_all(stack.gateway, p.sender)
    assert pulled == []
    cancelled = await stack.gateway.delete(job["status_url"], headers=p.cpo["bearer"])
    assert cancelled.status_code in (200, 202), cancelled.text
    final = await wait_for_job(stack.gateway, job["status_url"], p.cpo["bearer"])
    assert final["status"] == "CANCELLED", final
    fault_proxy.clear()
    await never_shown(stack, p)


async def never_shown(stack: Stack, p: Party) -> None:
    """Nothing was pushed to the eMSP, and nothing is there to pull, after the pushes' delays."""
    await stack.env.sleep(60)
    assert p.emsp.locations == {} and [r for r in p.emsp.received if r.method in ("PUT", "PATCH")] == []
    assert (await p.emsp.pull_all(stack.gateway, p.sender))[0] == []


async def wait_rows(engine: AsyncEngine, job_id: str) -> None:
    """Until the job's location rows are written (it is then PROVISIONING, waiting on ECS)."""
    for _ in range(300):
        async with engine.connect() as conn:
            n = (
                await conn.execute(
                    text("SELECT count(*) FROM ocpp.ocpi_locations WHERE job_id = :j"), {"j": job_id}
                )
            ).scalar_one()
        if n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the location's rows were never written")


# ------------------------------------------------------------------------ honest data


async def test_capabilities_opening_times_ids_and_routing_headers(stack: Stack, emsp: FakeEmsp) -> None:
    p = await party(stack, emsp)
    refused = await stack.gateway.post(
        f"/ocpi/cpos/{p.cpo['cpo_id']}/locations",
        headers=p.cpo["bearer"],
        json={
            "locations": [
                location("Liar", [charger(unique("LIE"), capabilities=["REMOTE_START_STOP_CAPABLE"])])
            ]
        },
    )
    assert refused.status_code == 422 and "capabilities" in refused.text, refused.text
    (x,) = await provision(
        stack.gateway,
        p.cpo,
        [
            location(
                "Honest",
                [
                    charger(unique("PAY"), capabilities=["CREDIT_CARD_PAYABLE", "CONTACTLESS_CARD_SUPPORT"]),
                    charger(unique("DC"), connector_type="CCS2", max_power_kw=150),
                ],
                twentyfourseven=True,
            )
        ],
    )
    (hub,) = await provision(stack.gateway, p.cpo, [location("Template", template="highway-dc")])
    await settle(stack, p, [x, hub])
    declared = {tuple(e.get("capabilities", [])) for e in emsp.locations[p.key(hub)]["evses"]}
    assert declared == {("CREDIT_CARD_PAYABLE", "CONTACTLESS_CARD_SUPPORT"), ()}  # per charger group
    obj = emsp.locations[p.key(x)]
    assert obj["opening_times"] == {"twentyfourseven": True}
    caps = sorted(tuple(e.get("capabilities", [])) for e in obj["evses"])
    assert caps == [(), ("CREDIT_CARD_PAYABLE", "CONTACTLESS_CARD_SUPPORT")], caps
    assert emsp.locations[p.key(x)] == await _get(p, x.upper())  # CiString: any case finds it
    token = emsp.token_to_call_cpo
    assert token is not None
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{p.sender}/{x}", headers=emsp.headers(token))
    assert (answer.headers["ocpi-from-country-code"], answer.headers["ocpi-from-party-id"]) == (
        "BE",
        p.cpo["party"]["party_id"],
    )
    assert (answer.headers["ocpi-to-country-code"], answer.headers["ocpi-to-party-id"]) == (
        "NL",
        emsp.party_id,
    )
    # no longer open around the clock: opening_times goes, so the push is a PUT
    answer2 = await stack.gateway.patch(p.url(x), json={"twentyfourseven": False}, headers=p.cpo["bearer"])
    assert answer2.status_code == 200
    await settle(stack, p, [x])
    assert "opening_times" not in emsp.locations[p.key(x)]


async def test_registration_errors_are_ocpi_codes_in_an_http_200(stack: Stack, emsp: FakeEmsp) -> None:
    """status_codes: a request that reached the OCPI layer is answered HTTP 200 with its code;
    401 and a body that is not JSON stay HTTP errors. The token A survives every failure."""
    cpo = await new_cpo(stack.gateway)
    creds_url = cpo["ocpi_peer_url"].replace("/versions", "/2.2.1/credentials")
    headers = emsp.headers(cpo["token_a"])
    cases: list[tuple[str, dict[str, Any], int, int]] = []
    emsp.versions_offered = ("2.1.1",)
    answer = await stack.gateway.post(creds_url, json=emsp.credentials(), headers=headers)
    cases.append(("no 2.2.1", answer.json(), answer.status_code, 3002))
    emsp.versions_offered, emsp.list_endpoints = ("2.2.1",), False
    answer = await stack.gateway.post(creds_url, json=emsp.credentials(), headers=headers)
    cases.append(("no endpoints", answer.json(), answer.status_code, 3003))
    emsp.list_endpoints = True
    answer = await stack.gateway.post(
        creds_url, json={**emsp.credentials(), "url": "http://127.0.0.1:9/v"}, headers=headers
    )
    cases.append(("unreachable", answer.json(), answer.status_code, 3001))
    answer = await stack.gateway.post(creds_url, json={**emsp.credentials(), "roles": []}, headers=headers)
    cases.append(("invalid body", answer.json(), answer.status_code, 2001))
    for name, body, http_status, code in cases:
        assert (http_status, body["status_code"]) == (200, code), (name, body)
        assert set(body) == {"data", "status_code", "status_message", "timestamp"}
    not_json = await stack.gateway.post(
        creds_url, content=b"{nope", headers={**headers, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 400 and not_json.json()["status_code"] == 2001
    await emsp.register(stack.gateway, cpo["token_a"], cpo["ocpi_peer_url"])  # token A still good
    assert emsp.token_to_call_cpo is not None
