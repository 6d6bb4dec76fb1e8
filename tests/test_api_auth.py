"""The auth matrix: every route x {no token, bad token, admin, own CPO token, other CPO token}.

Rules (docs/security.md): 401 with `WWW-Authenticate: Bearer` without a valid token; a CPO token acts only
on its own cpo_id (403 elsewhere, whether or not that CPO exists); creating CPOs is admin-only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.worker import Worker

from tests.helpers import ADMIN, charger, create_cpo, location, submit, unique, wait_for_job


@dataclass
class World:
    cpo_a: str
    token_a: dict[str, str]
    token_b: dict[str, str]
    location_id: str
    job_url: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(app_client: httpx.AsyncClient, workers: list[Worker]) -> World:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    cpo_a, token_a = await create_cpo(app_client, admin)
    _, token_b = await create_cpo(app_client, admin)
    accepted = await submit(app_client, cpo_a, token_a, [location("Auth", [charger(unique("AUTH"))])])
    job = await wait_for_job(app_client, accepted["status_url"], token_a)
    return World(cpo_a, token_a, token_b, job["results"]["location_ids"][0], accepted["status_url"])


Request = Callable[[World], tuple[str, str, dict[str, Any] | None]]
ROUTES: dict[str, tuple[Request, int]] = {
    # name: (method, path, json) and the status an allowed caller gets
    "create CPO": (lambda w: ("POST", "/ocpi/cpos", {"name": "x", "country_code": "ZZ"}), 422),
    "bulk create": (lambda w: ("POST", f"/ocpi/cpos/{w.cpo_a}/locations", {"locations": []}), 422),
    "list locations": (lambda w: ("GET", f"/ocpi/cpos/{w.cpo_a}/locations", None), 200),
    "get location": (lambda w: ("GET", f"/ocpi/cpos/{w.cpo_a}/locations/{w.location_id}", None), 200),
    "patch location": (lambda w: ("PATCH", f"/ocpi/cpos/{w.cpo_a}/locations/{w.location_id}", {}), 200),
    "delete location": (lambda w: ("DELETE", f"/ocpi/cpos/{w.cpo_a}/locations/loc-gone", None), 204),
    "job status": (lambda w: ("GET", w.job_url, None), 200),
    "cancel job": (lambda w: ("DELETE", w.job_url, None), 409),  # it is READY: auth passed
    "templates": (lambda w: ("GET", "/ocpp/templates/locations", None), 200),
}
ADMIN_ONLY = {"create CPO"}
CALLERS = ["none", "bad", "admin", "own", "other"]


def headers_for(caller: str, world: World) -> dict[str, str]:
    return {
        "none": {},
        "bad": {"Authorization": "Bearer not-a-token"},
        "admin": {"Authorization": f"Bearer {ADMIN}"},
        "own": world.token_a,
        "other": world.token_b,
    }[caller]


def expected(route: str, caller: str) -> tuple[int, str | None]:
    allowed_status = ROUTES[route][1]
    if caller in ("none", "bad"):
        return 401, "UNAUTHORIZED"
    if caller == "admin":
        return allowed_status, None
    if route in ADMIN_ONLY:
        return 403, "FORBIDDEN"
    if caller == "other" and route != "templates":
        return 403, "FORBIDDEN"
    return allowed_status, None


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", list(ROUTES))
async def test_auth_matrix(app_client: httpx.AsyncClient, world: World, route: str, caller: str) -> None:
    method, path, body = ROUTES[route][0](world)
    response = await app_client.request(method, path, json=body, headers=headers_for(caller, world))
    status, code = expected(route, caller)
    assert response.status_code == status, (route, caller, response.text)
    if status >= 400:
        assert response.headers["content-type"] == "application/problem+json"
    if code is not None:
        assert response.json()["code"] == code
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
