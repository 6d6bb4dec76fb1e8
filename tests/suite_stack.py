"""The suite's Temporal pieces, written once: a time-skipping server with the custom search
attributes registered, the workers of a worker process running on it, and the real app over
ASGI (its lifespan run by hand)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.ecs_client import ecs_client, secrets_client
from contracts.temporal import SEARCH_ATTRIBUTES
from db.engine import make_sessionmaker
from devstack.procs import venv_binary
from settings import Settings
from worker.workers import build_workers

INDEXED = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


@asynccontextmanager
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server from the venv (nothing downloaded), with the search
    attributes the workflows set (it refuses unregistered ones)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(venv_binary("temporal-test-server"))
    )
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                search_attributes={name: INDEXED[kind] for name, kind in SEARCH_ATTRIBUTES.items()},
                namespace=env.client.namespace,
            )
        )
        yield env
    finally:
        await env.shutdown()


@asynccontextmanager
async def running_workers(
    client: Client, settings: Settings, engine: AsyncEngine
) -> AsyncIterator[list[Worker]]:
    """The workers `python -m worker` runs, in this process, until the block ends."""
    async with ecs_client(settings) as ecs, secrets_client(settings) as sm:
        built = build_workers(client, settings, make_sessionmaker(engine), ecs, sm)
        runs = [asyncio.create_task(w.run()) for w in built]
        try:
            yield built
        finally:
            await asyncio.gather(*(w.shutdown() for w in built))
            await asyncio.gather(*runs, return_exceptions=True)


@asynccontextmanager
async def asgi_client(
    app: FastAPI,
    base_url: str = "http://gateway.test",
    *,
    raise_app_exceptions: bool = True,
    timeout: float = 5.0,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the real app over ASGI, its lifespan (start-up and shutdown) run by hand."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=timeout) as client:
            yield client
