"""The FastAPI application (`uvicorn api.app:app`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from temporalio.client import Client

from api import problems
from api.body_guard import BodyGuard
from api.deps import TemporalConnector
from api.job_starts import JobStarts
from api.metrics import ApiMetrics, MetricsMiddleware, metrics_endpoint
from api.ocpi.client import HandshakeSlots
from api.ocpi.routes import create_ocpi_app
from api.read_cache import ReadCaches
from api.request_log import RequestLogContext
from api.routes import cpos, health, locations, templates, tokens, webhooks
from api.schemas import BulkCreateRequest
from api.state import Services
from contracts.heap import settle_heap
from db.engine import make_engine, make_sessionmaker
from observability.logs import configure_logging
from observability.tracing import fastapi_telemetry, init_tracing
from settings import Settings, get_settings

DESCRIPTION = """Durable bulk-create of OCPI locations and their simulated OCPP chargers.

Every route needs `Authorization: Bearer <token>`: the admin token, or a CPO's own token (which
may act only on its own `cpo_id`). Errors are RFC 9457 `application/problem+json` with a stable
`code`.
"""


def create_app(
    settings: Settings | None = None, temporal_client: Client | None = None, configure_logs: bool = False
) -> FastAPI:
    """The app; `temporal_client` is for callers that already hold a connected client (tests);
    `configure_logs`: the process's log handler and garbage collector (`uvicorn api.app:app`),
    left alone in tests."""
    settings = settings or get_settings()
    ocpi_app = create_ocpi_app()
    metrics = ApiMetrics()
    init_tracing(settings.otel_exporter_otlp_endpoint, "ocpplab-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.check_secrets()  # at start-up: uvicorn then exits with the reason
        if configure_logs:  # after uvicorn set up its loggers, which this takes over
            configure_logging(settings.log_format, settings.log_level)
        engine = make_engine(settings)
        sessions = make_sessionmaker(engine)
        app.state.services = ocpi_app.state.services = Services(
            settings=settings,
            engine=engine,
            sessions=sessions,
            temporal=TemporalConnector(settings, temporal_client),
            read_cache=ReadCaches(
                settings.auth_cache_seconds, settings.status_cache_seconds, settings.status_cache_max_bytes
            ),
            handshakes=HandshakeSlots(settings.ocpi_handshakes_per_cpo, settings.ocpi_handshakes_per_process),
            metrics=metrics,
            job_starts=JobStarts(sessions, metrics.workflow_start.time),
        )
        if configure_logs:  # the process's own app (not a test's)
            settle_heap(settings.gc_gen0_threshold)
        try:
            yield
        finally:
            await app.state.services.job_starts.drain(settings.job_start_wait_seconds + 5)
            await engine.dispose()

    app = FastAPI(
        title="OCPPLAB Gateway API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=fastapi_telemetry(),  # type: ignore[arg-type]
    )
    problems.install(app)
    app.add_middleware(BodyGuard)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestLogContext)  # outermost: every line of the request has its context
    app.add_api_route("/metrics", metrics_endpoint, include_in_schema=False)
    app.include_router(health.router)
    app.include_router(cpos.router)
    app.include_router(tokens.router)
    app.include_router(locations.router)
    app.include_router(templates.router)
    app.include_router(webhooks.router)
    app.mount("/ocpi/cpo", ocpi_app)  # OCPI 2.2.1 for eMSPs: its own envelope and errors
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the bulk body's schemas: the bulk POST parses its body itself
    (api/bulk_validation.py), so FastAPI does not collect them from the route."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        body = BulkCreateRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        found = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in {**body.pop("$defs", {}), "BulkCreateRequest": body}.items():
            found.setdefault(name, definition)
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app(configure_logs=True)
