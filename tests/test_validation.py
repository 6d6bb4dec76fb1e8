"""The validation matrix of the API: every bad input answers a 4xx problem+json naming the field.

Each bad location sits at index 1, after a valid one, so the index in the field path is checked
too (`locations[1].country`); each bad charger sits at index 1 of its location, after a valid
one (`locations[1].chargers[1].identity`). Nothing here needs a worker: a refused request starts
nothing, and the few accepted ones (202) go to a task queue nobody polls and are terminated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.helpers import ADMIN, charger, create_cpo, location

PROBLEM_JSON = "application/problem+json"
IDLE_QUEUE = "validation-nobody-polls"

Body = dict[str, Any]
Cpo = tuple[str, dict[str, str]]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cpo(app_client: httpx.AsyncClient) -> Cpo:
    """One CPO for the whole matrix (its own token); nothing valid is ever written under it."""
    return await create_cpo(app_client, {"Authorization": f"Bearer {ADMIN}"})


def url(cpo_id: str) -> str:
    return f"/ocpi/cpos/{cpo_id}/locations"


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body = dict(response.json())
    assert body["status"] == status
    assert body["type"] and body["title"]
    if code is not None:
        assert body["code"] == code, body
    return body


def assert_invalid(response: httpx.Response, field: str) -> dict[str, Any]:
    body = assert_problem(response, 422, "VALIDATION_ERROR")
    fields = [e["field"] for e in body["errors"]]
    assert field in fields, f"{field!r} not in {fields}"
    for error in body["errors"]:
        assert error["message"] and error["type"]
    return body


# ------------------------------------------------------------------ one bad location at index 1


def bad(**extra: Any) -> Body:
    """A location, valid but for `extra` (which may replace its name)."""
    return {**location("Bad one"), **extra}


def without(field: str) -> Body:
    loc = location("Missing one")
    del loc[field]
    return loc


def with_charger(**extra: Any) -> Body:
    """A location whose second charger is valid but for `extra`."""
    return location("Charger one", [charger("VALID-0"), {**charger("VALID-1"), **extra}])


def coords(latitude: Any = 50.8357, longitude: Any = 4.3353) -> dict[str, Any]:
    return {"coordinates": {"latitude": latitude, "longitude": longitude}}


LOCATION_CASES = [
    # country: ISO-3166 alpha-2 or alpha-3, a real one
    pytest.param(bad(country="XX"), "locations[1].country", id="country-XX"),
    pytest.param(bad(country="Belgium"), "locations[1].country", id="country-name"),
    pytest.param(bad(country="B"), "locations[1].country", id="country-1-char"),
    pytest.param(bad(country="ZZZ"), "locations[1].country", id="country-alpha3-unknown"),
    pytest.param(bad(country=56), "locations[1].country", id="country-number"),
    # coordinates: numbers within range
    pytest.param(bad(**coords(latitude=90.5)), "locations[1].coordinates.latitude", id="lat-90.5"),
    pytest.param(bad(**coords(latitude=-91)), "locations[1].coordinates.latitude", id="lat--91"),
    pytest.param(bad(**coords(latitude="abc")), "locations[1].coordinates.latitude", id="lat-text"),
    pytest.param(bad(**coords(latitude=True)), "locations[1].coordinates.latitude", id="lat-bool"),
    pytest.param(bad(**coords(latitude=None)), "locations[1].coordinates.latitude", id="lat-null"),
    pytest.param(bad(**coords(longitude=180.01)), "locations[1].coordinates.longitude", id="lng-180.01"),
    pytest.param(bad(**coords(longitude=-180.5)), "locations[1].coordinates.longitude", id="lng--180.5"),
    pytest.param(bad(coordinates={"latitude": 50.8}), "locations[1].coordinates.longitude", id="lng-missing"),
    pytest.param(bad(coordinates=[50.8, 4.3]), "locations[1].coordinates", id="coordinates-list"),
    # OCPI lengths
    pytest.param(bad(address="a" * 46), "locations[1].address", id="address-46"),
    pytest.param(bad(city="c" * 46), "locations[1].city", id="city-46"),
    pytest.param(bad(name="n" * 256), "locations[1].name", id="name-256"),
    pytest.param(bad(postal_code="1" * 11), "locations[1].postal_code", id="postal_code-11"),
    pytest.param(bad(state="s" * 21), "locations[1].state", id="state-21"),
    pytest.param(bad(owner_name="o" * 101), "locations[1].owner_name", id="owner_name-101"),
    # printable text, not empty
    pytest.param(bad(name="a\u0007b"), "locations[1].name", id="name-control-char"),
    pytest.param(bad(address="Rue\nNeuve 1"), "locations[1].address", id="address-newline"),
    pytest.param(bad(name="   "), "locations[1].name", id="name-blank"),
    pytest.param(bad(city=""), "locations[1].city", id="city-empty"),
    # required fields
    pytest.param(without("name"), "locations[1].name", id="missing-name"),
    pytest.param(without("address"), "locations[1].address", id="missing-address"),
    pytest.param(without("city"), "locations[1].city", id="missing-city"),
    pytest.param(without("country"), "locations[1].country", id="missing-country"),
    pytest.param(without("coordinates"), "locations[1].coordinates", id="missing-coordinates"),
    # the other fields
    pytest.param(bad(timezone="Mars/Olympus"), "locations[1].timezone", id="timezone-unknown"),
    pytest.param(bad(public="yes"), "locations[1].public", id="public-yes"),
    pytest.param(bad(public="true"), "locations[1].public", id="public-string-true"),
    pytest.param(bad(public=1), "locations[1].public", id="public-1"),
    pytest.param(bad(public=None), "locations[1].public", id="public-null"),
    pytest.param(bad(parking_type="ROOFTOP"), "locations[1].parking_type", id="parking_type-unknown"),
    pytest.param(bad(facilities=["HOTEL", "CASINO"]), "locations[1].facilities[1]", id="facility-unknown"),
    # template
    pytest.param(bad(template="no-such-template"), "locations[1].template", id="template-unknown"),
    pytest.param(
        bad(template="urban-ac", chargers=[charger("T-AND-C")]), "locations[1]", id="template-and-chargers"
    ),
    # chargers: the bad one at index 1 of location 1
    pytest.param(with_charger(identity="I" * 49), "locations[1].chargers[1].identity", id="identity-49"),
    pytest.param(with_charger(identity="CP 01"), "locations[1].chargers[1].identity", id="identity-space"),
    pytest.param(with_charger(identity="CP/01"), "locations[1].chargers[1].identity", id="identity-slash"),
    pytest.param(with_charger(identity=""), "locations[1].chargers[1].identity", id="identity-empty"),
    pytest.param(
        with_charger(ocpp_version="OCPP1.5"), "locations[1].chargers[1].ocpp_version", id="ocpp_version-1.5"
    ),
    pytest.param(
        with_charger(connector_type="Type9"),
        "locations[1].chargers[1].connector_type",
        id="connector_type-Type9",
    ),
    pytest.param(with_charger(max_power_kw=0), "locations[1].chargers[1].max_power_kw", id="power-0"),
    pytest.param(with_charger(max_power_kw=-5), "locations[1].chargers[1].max_power_kw", id="power--5"),
    pytest.param(with_charger(evses=0), "locations[1].chargers[1].evses", id="evses-0"),
    pytest.param(with_charger(evses=2.5), "locations[1].chargers[1].evses", id="evses-2.5"),
    pytest.param(
        location("No identity", [charger("VALID-0"), {"vendor": "ABB"}]),
        "locations[1].chargers[1].identity",
        id="identity-missing",
    ),
    pytest.param(bad(chargers={"identity": "X"}), "locations[1].chargers", id="chargers-object"),
    pytest.param("not a location", "locations[1]", id="location-string"),
]


@pytest.mark.parametrize(("bad_location", "field"), LOCATION_CASES)
async def test_bad_location_field_is_named_with_its_index(
    app_client: httpx.AsyncClient, cpo: Cpo, bad_location: Any, field: str
) -> None:
    cpo_id, token = cpo
    body = {"locations": [location("Good one", [charger("GOOD-0")]), bad_location]}
    response = await app_client.post(url(cpo_id), json=body, headers=token)
    problem = assert_invalid(response, field)
    assert not any(e["field"].startswith("locations[0]") for e in problem["errors"]), problem
    assert field in problem["detail"]


async def test_every_bad_field_of_every_location_is_reported(app_client: httpx.AsyncClient, cpo: Cpo) -> None:
    cpo_id, token = cpo
    body = {
        "locations": [
            location("Bad A", country="XX"),
            location("Good"),
            location("Bad C", city="c" * 46, **coords(latitude=91)),
        ]
    }
    problem = assert_invalid(
        await app_client.post(url(cpo_id), json=body, headers=token), "locations[0].country"
    )
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"locations[0].country", "locations[2].city", "locations[2].coordinates.latitude"}


# ------------------------------------------------------------------ identities across locations


IDENTITY_CASES = [
    pytest.param(
        [location("A", [charger("DUP-1")]), location("B", [charger("OTHER-1"), charger("DUP-1")])],
        "locations[1].chargers[1].identity",
        id="across-locations",
    ),
    pytest.param(
        [location("A", [charger("SAME-1"), charger("SAME-1")])],
        "locations[0].chargers[1].identity",
        id="within-a-location",
    ),
    pytest.param(
        [location("A", [charger("PAD-1")]), location("B", [charger("  PAD-1  ")])],
        "locations[1].chargers[0].identity",
        id="same-after-trimming",
    ),
]


@pytest.mark.parametrize(("locations", "field"), IDENTITY_CASES)
async def test_duplicate_identity_names_the_second_occurrence(
    app_client: httpx.AsyncClient, cpo: Cpo, locations: list[Body], field: str
) -> None:
    cpo_id, token = cpo
    response = await app_client.post(url(cpo_id), json={"locations": locations}, headers=token)
    problem = assert_invalid(response, field)
    assert [e["field"] for e in problem["errors"]] == [field]
    assert problem["errors"][0]["type"] == "duplicate_identity"


# ------------------------------------------------------------------ the body as a whole


BODY_CASES = [
    pytest.param({"locations": []}, "locations", id="locations-empty"),
    pytest.param({"locations": "Brussels"}, "locations", id="locations-string"),
    pytest.param({"locations": {"0": location("x")}}, "locations", id="locations-object"),
    pytest.param({"locations": None}, "locations", id="locations-null"),
    pytest.param({}, "locations", id="locations-missing"),
    pytest.param({"locations": [1]}, "locations[0]", id="location-number"),
    pytest.param([location("x")], "body", id="body-is-a-list"),
    pytest.param("locations", "body", id="body-is-a-string"),
]


@pytest.mark.parametrize(("body", "field"), BODY_CASES)
async def test_bad_body_shape(app_client: httpx.AsyncClient, cpo: Cpo, body: Any, field: str) -> None:
    cpo_id, token = cpo
    assert_invalid(await app_client.post(url(cpo_id), json=body, headers=token), field)


MALFORMED = [
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b'{"locations": [', id="truncated"),
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
    pytest.param(b"[" * 100_000, id="nested-too-deep"),
    pytest.param(b'{"locations": [{"name": "x", "evses": 1' + b"1" * 5000 + b"}]}", id="huge-integer"),
]


@pytest.mark.parametrize("raw", MALFORMED)
async def test_body_that_is_not_json_is_400(app_client: httpx.AsyncClient, cpo: Cpo, raw: bytes) -> None:
    cpo_id, token = cpo
    response = await app_client.post(
        url(cpo_id), content=raw, headers={**token, "Content-Type": "application/json"}
    )
    assert_problem(response, 400, "MALFORMED_BODY")


@pytest.mark.parametrize("content_type", [None, "application/json"])
async def test_no_body_is_a_client_error(
    app_client: httpx.AsyncClient, cpo: Cpo, content_type: str | None
) -> None:
    cpo_id, token = cpo
    headers = {**token, **({"Content-Type": content_type} if content_type else {})}
    response = await app_client.post(url(cpo_id), headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code)


async def test_not_a_number_is_refused(app_client: httpx.AsyncClient, cpo: Cpo) -> None:
    """Python's JSON parser takes NaN and Infinity; coordinates must still be finite."""
    cpo_id, token = cpo
    raw = (
        '{"locations": [{"name": "n", "address": "a", "city": "c", "country": "BE",'
        ' "coordinates": {"latitude": NaN, "longitude": Infinity}}]}'
    )
    response = await app_client.post(
        url(cpo_id), content=raw.encode(), headers={**token, "Content-Type": "application/json"}
    )
    problem = assert_invalid(response, "locations[0].coordinates.latitude")
    assert "locations[0].coordinates.longitude" in {e["field"] for e in problem["errors"]}


# ------------------------------------------------------------------ the per-request limit


async def test_more_locations_than_the_limit_is_413(app_with: Any, admin: dict[str, str]) -> None:
    async with app_with(max_locations_per_request=3) as client:
        cpo_id, token = await create_cpo(client, admin)
        too_many = {"locations": [location(f"L{i}", country="XX") for i in range(4)]}
        response = await client.post(url(cpo_id), json=too_many, headers=token)
        problem = assert_problem(response, 413, "TOO_MANY_LOCATIONS")
        assert "3" in problem["detail"] and "4" in problem["detail"], problem

        # at the limit the locations are validated (these are invalid: nothing starts)
        at_limit = {"locations": [location(f"L{i}", country="XX") for i in range(3)]}
        problem = assert_invalid(
            await client.post(url(cpo_id), json=at_limit, headers=token), "locations[2].country"
        )
        assert len(problem["errors"]) == 3


async def test_the_limit_is_checked_after_authentication(app_with: Any, cpo: Cpo) -> None:
    cpo_id, _ = cpo
    async with app_with(max_locations_per_request=3) as client:
        too_many = {"locations": [location(f"L{i}") for i in range(4)]}
        assert_problem(await client.post(url(cpo_id), json=too_many), 401, "UNAUTHORIZED")


# ------------------------------------------------------------------ accepted edge values (202)


def at_the_limits() -> Body:
    return bad(
        name="N" * 255,
        chargers=[
            charger("I" * 48, evses=8, max_power_kw=1000, connector_type="CCS2", ocpp_version="OCPP2.0.1")
        ],
        address="A" * 45,
        city="C" * 45,
        postal_code="1" * 10,
        state="S" * 20,
        country="bel",
        coordinates={"latitude": -90, "longitude": 180},
        timezone="Europe/Brussels",
        public=False,
        parking_type="ON_STREET",
        facilities=["CAFE"],
    )


ACCEPTED = [
    pytest.param(location("Alpha-3", country="BEL"), "BEL", id="alpha-3"),
    pytest.param(location("Lowercase", country="be"), "BEL", id="alpha-2-lowercase"),
    pytest.param(at_the_limits(), "BEL", id="every-field-at-its-limit"),
]


@pytest.mark.parametrize(("accepted", "stored_country"), ACCEPTED)
async def test_valid_edge_values_are_accepted(
    app_with: Any,
    admin: dict[str, str],
    temporal: WorkflowEnvironment,
    engine: AsyncEngine,
    accepted: Body,
    stored_country: str,
) -> None:
    async with app_with(task_queue=IDLE_QUEUE) as client:
        cpo_id, token = await create_cpo(client, admin)
        response = await client.post(
            url(cpo_id), headers=token, json={"locations": [location("Plain"), accepted]}
        )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    await temporal.client.get_workflow_handle(job_id).terminate("validation test over")
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT input FROM ocpp.job_locations WHERE job_id = :j AND index = 1"), {"j": job_id}
            )
        ).scalar_one()
    assert stored["country"] == stored_country  # OCPI stores alpha-3
    assert re.fullmatch(r"-?[0-9]{1,2}\.[0-9]{6}", stored["latitude"]), stored
    assert re.fullmatch(r"-?[0-9]{1,3}\.[0-9]{6}", stored["longitude"]), stored


# ------------------------------------------------------------------ POST /ocpi/cpos


CPO_CASES = [
    pytest.param({"country_code": "ZZ"}, "country_code", id="country_code-ZZ"),
    pytest.param({"country_code": "BEL"}, "country_code", id="country_code-alpha3"),
    pytest.param({"party_id": "AB"}, "party_id", id="party_id-2"),
    pytest.param({"party_id": "ABCD"}, "party_id", id="party_id-4"),
    pytest.param({"party_id": "A-B"}, "party_id", id="party_id-dash"),
    pytest.param({"name": "x" * 256}, "name", id="name-256"),
    pytest.param({"name": None}, "name", id="name-null"),
]


@pytest.mark.parametrize(("change", "field"), CPO_CASES)
async def test_bad_cpo_field_is_named(
    app_client: httpx.AsyncClient, admin: dict[str, str], change: Body, field: str
) -> None:
    body = {"name": "Validation CPO", "country_code": "BE", "party_id": "VAL", **change}
    assert_invalid(await app_client.post("/ocpi/cpos", json=body, headers=admin), field)


async def test_cpo_token_cannot_create_cpos(app_client: httpx.AsyncClient, cpo: Cpo) -> None:
    _, token = cpo
    body = {"name": "Sneaky", "country_code": "BE", "party_id": "SNK"}
    assert_problem(await app_client.post("/ocpi/cpos", json=body, headers=token), 403, "FORBIDDEN")


# ------------------------------------------------------------------ who may call


EMPTY: Body = {"locations": []}  # invalid on purpose: the caller is refused before the body is read


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer not-a-token"}, id="unknown-token"),
        pytest.param({"Authorization": "Bearer "}, id="empty-token"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic-auth"),
    ],
)
async def test_missing_or_unknown_token_is_401(
    app_client: httpx.AsyncClient, cpo: Cpo, headers: dict[str, str]
) -> None:
    cpo_id, _ = cpo
    response = await app_client.post(url(cpo_id), json=EMPTY, headers=headers)
    assert_problem(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_no_token_on_create_cpo_is_401(app_client: httpx.AsyncClient) -> None:
    response = await app_client.post("/ocpi/cpos", json={"name": "x"})
    assert_problem(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_cpo_token_on_another_cpo_is_403(
    app_client: httpx.AsyncClient, admin: dict[str, str], cpo: Cpo
) -> None:
    other_id, _ = await create_cpo(app_client, admin)
    _, token = cpo
    for target in (other_id, "999999"):  # 403 whether or not the other CPO exists
        response = await app_client.post(url(target), json=EMPTY, headers=token)
        assert_problem(response, 403, "FORBIDDEN")


async def test_own_token_reaches_validation(app_client: httpx.AsyncClient, cpo: Cpo) -> None:
    cpo_id, token = cpo
    assert_invalid(await app_client.post(url(cpo_id), json=EMPTY, headers=token), "locations")


@pytest.mark.parametrize("cpo_id", ["999999", "999999999999999999"])
async def test_admin_on_unknown_cpo_is_404(
    app_client: httpx.AsyncClient, admin: dict[str, str], cpo_id: str
) -> None:
    body = {"locations": [location("Nowhere")]}
    assert_problem(await app_client.post(url(cpo_id), json=body, headers=admin), 404, "CPO_NOT_FOUND")


@pytest.mark.parametrize("cpo_id", ["abc", "-1", "1.5", "1" * 19, "%20"])
async def test_malformed_cpo_id_is_422(
    app_client: httpx.AsyncClient, admin: dict[str, str], cpo_id: str
) -> None:
    body = {"locations": [location("Nowhere")]}
    assert_invalid(await app_client.post(url(cpo_id), json=body, headers=admin), "cpo_id")


ROUTES: list[tuple[str, Callable[[str], str]]] = [
    ("GET", lambda c: f"/ocpi/cpos/{c}/locations/jobs/job-unknown"),
    ("GET", lambda c: f"/ocpi/cpos/{c}/locations/loc-unknown"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=["job", "location"])
async def test_other_routes_answer_problems(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    cpo: Cpo,
    method: str,
    path: Callable[[str], str],
) -> None:
    cpo_id, token = cpo
    assert_problem(await app_client.request(method, path(cpo_id)), 401, "UNAUTHORIZED")
    assert_invalid(await app_client.request(method, path("abc"), headers=admin), "cpo_id")
    response = await app_client.request(method, path(cpo_id), headers=token)
    assert_problem(response, 404)
    assert response.json()["code"] in ("JOB_NOT_FOUND", "LOCATION_NOT_FOUND")
