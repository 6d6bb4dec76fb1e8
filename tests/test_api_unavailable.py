"""503 (saying which) when PostgreSQL or Temporal cannot be reached; never a hang, never a 500."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.problems import DATABASE_DOWN, TEMPORAL_DOWN
from devstack.procs import free_port
from settings import Settings
from tests.helpers import ADMIN, create_cpo, location
from tests.suite_stack import asgi_client


async def call(settings: Settings, method: str, path: str, **kwargs: Any) -> httpx.Response:
    app = create_app(settings)
    async with asgi_client(app, "http://t") as client:
        return await asyncio.wait_for(client.request(method, path, **kwargs), timeout=30)


async def test_postgres_unreachable_is_503(settings: Settings) -> None:
    closed = settings.model_copy(
        update={"database_url": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/ocpplab"}
    )
    response = await call(
        closed, "GET", "/ocpi/cpos/1/locations", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "DATABASE_UNAVAILABLE"
    assert response.json()["detail"] == DATABASE_DOWN  # which part, never where it is
    assert (await call(closed, "GET", "/readyz")).status_code == 503


async def test_temporal_unreachable_is_503_and_leaves_no_job(
    app_client: httpx.AsyncClient, admin: dict[str, str], settings: Settings, engine: AsyncEngine
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    port = free_port()
    closed = settings.model_copy(update={"temporal_address": f"127.0.0.1:{port}"})
    response = await call(
        closed,
        "POST",
        f"/ocpi/cpos/{cpo_id}/locations",
        headers=token,
        json={"locations": [location("Nowhere")]},
    )
    assert response.status_code == 503
    assert response.json()["code"] == "TEMPORAL_UNAVAILABLE"
    # the tenant learns which part is down, never its address (that stays in the logs)
    assert response.json()["detail"] == TEMPORAL_DOWN
    assert str(port) not in response.text and "127.0.0.1" not in response.text
    assert response.headers["retry-after"]
    async with engine.connect() as conn:
        jobs = (
            await conn.execute(text("SELECT count(*) FROM ocpp.jobs WHERE cpo_id = :c"), {"c": int(cpo_id)})
        ).scalar_one()
    assert jobs == 0


async def test_unexpected_error_is_a_generic_500_that_leaks_nothing(settings: Settings) -> None:
    from api.deps import get_principal

    def boom() -> None:
        raise RuntimeError("password=hunter2 at /srv/secret.py line 42")

    app = create_app(settings)
    app.dependency_overrides[get_principal] = boom
    async with asgi_client(app, "http://t", raise_app_exceptions=False) as client:
        response = await client.get("/ocpp/templates/locations")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "INTERNAL_ERROR"
    assert "hunter2" not in response.text and "secret" not in response.text
