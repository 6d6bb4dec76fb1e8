"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from api.deps import get_temporal
from api.problems import PROBLEM_JSON, TITLES, Problem, error_responses
from api.state import services

log = logging.getLogger("api.health")
router = APIRouter(tags=["Health"])
CHECK_SECONDS = 3.0  # a readiness probe must answer before the orchestrator's probe times out


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _postgres(request: Request) -> None:
    async with services(request).sessions() as session:
        await session.execute(text("SELECT 1"))


async def _temporal(request: Request) -> None:
    client = await (await get_temporal(request)).get()
    await client.workflow_service.get_system_info(
        GetSystemInfoRequest(), timeout=timedelta(seconds=CHECK_SECONDS)
    )


async def _check(name: str, probe: Any, request: Request) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe(request), timeout=CHECK_SECONDS + 2)
    except Exception as err:  # any failure means "not ready"; the reason goes to the log only
        log.warning("readiness: %s unavailable: %r", name, err)
        return name, "unavailable"
    return name, "ok"


@router.get(
    "/readyz",
    summary="Readiness: PostgreSQL and Temporal answer",
    description='200 `{"postgres": "ok", "temporal": "ok"}`; otherwise 503 problem+json whose '
    "`code` and `detail` name what is down (`checks` has each one's state).",
    responses=error_responses(503),
)
async def readyz(request: Request) -> Any:
    checks = dict(
        await asyncio.gather(_check("postgres", _postgres, request), _check("temporal", _temporal, request))
    )
    down = [name for name, state in checks.items() if state != "ok"]
    if not down:
        return checks
    names = {"postgres": "PostgreSQL", "temporal": "Temporal"}
    code = (
        {"postgres": "DATABASE_UNAVAILABLE", "temporal": "TEMPORAL_UNAVAILABLE"}[down[0]]
        if len(down) == 1
        else "SERVICE_UNAVAILABLE"
    )
    detail = " and ".join(names[d] for d in down) + " cannot be reached"
    body = Problem(
        type=f"urn:ocpplab:problem:{code.lower()}",
        title=TITLES[503],
        status=503,
        code=code,
        detail=detail,
        instance=request.url.path,
    ).model_dump(exclude_none=True)
    return JSONResponse(
        {**body, "checks": checks}, status_code=503, media_type=PROBLEM_JSON, headers={"Retry-After": "5"}
    )
