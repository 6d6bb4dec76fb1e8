"""One way to connect to Temporal, for the API, the worker and the tests."""

from __future__ import annotations

from temporalio.client import Client

from settings import Settings


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key,
        tls=settings.temporal_tls,
    )
