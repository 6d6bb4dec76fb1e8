"""Shared steps of the flow tests: a CPO, a job polled to its end, the rows and tasks it left."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import string
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.location_shape import network_counts_sql

ADMIN = "test-admin-token-0123456789"  # the admin token of the suite's app
_parties = itertools.product(string.ascii_uppercase, repeat=3)
_serial = itertools.count(1)


def unique(prefix: str) -> str:
    """A charger identity no other test of this session uses."""
    return f"{prefix}-{next(_serial)}"


def expected_counts(
    chargers_per_location: list[list[int]], removed: list[list[int]] | None = None
) -> dict[str, int]:
    """Row counts for locations given as lists of their chargers' EVSE counts. `removed`
    locations (DELETEd) keep only their OCPI rows: location, EVSEs and connectors, REMOVED."""
    chargers = sum(len(c) for c in chargers_per_location)
    evses = sum(sum(c) for c in chargers_per_location)
    n = len(chargers_per_location)
    gone = removed or []
    kept_evses = sum(sum(c) for c in gone)
    return {
        "ocpi_locations": n + len(gone),
        "ocpi_evses": evses + kept_evses,
        "ocpi_connectors": evses + kept_evses,
        "locations": n,
        "charge_points": chargers,
        "charge_point_connectors": evses,
        "charge_point_credentials": chargers,
        "network_topology": evses,
        "charger_deployments": chargers,
        "ecs_tasks": chargers,
    }


async def table_counts(engine: AsyncEngine, cpo_id: str | int) -> dict[str, int]:
    """Rows of the CPO's locations in each of the ten tables."""
    async with engine.connect() as conn:
        row = (await conn.execute(text(network_counts_sql()), {"n": int(cpo_id)})).one()
    return {name: int(value) for name, value in row._mapping.items()}


async def create_cpo(client: httpx.AsyncClient, admin: dict[str, str]) -> tuple[str, dict[str, str]]:
    party = "".join(next(_parties))
    response = await client.post(
        "/ocpi/cpos",
        json={"name": f"CPO {party}", "country_code": "BE", "party_id": party},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["cpo_id"], {"Authorization": f"Bearer {body['token']}"}


def location(name: str, chargers: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    loc: dict[str, Any] = {
        "name": name,
        "address": "Place Victor Horta 1",
        "city": "Brussels",
        "country": "BE",
        "coordinates": {"latitude": 50.8357, "longitude": 4.3353},
        "public": True,
    }
    if chargers is not None:
        loc["chargers"] = chargers
    loc.update(extra)
    return loc


def charger(identity: str, evses: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "identity": identity,
        "vendor": "ABB",
        "model": "Terra AC",
        "ocpp_version": "OCPP1.6",
        "connector_type": "Type2",
        "max_power_kw": 22,
        "evses": evses,
        **extra,
    }


async def submit(
    client: httpx.AsyncClient,
    cpo_id: str,
    headers: dict[str, str],
    locations: list[dict[str, Any]],
) -> dict[str, Any]:
    response = await client.post(
        f"/ocpi/cpos/{cpo_id}/locations", json={"locations": locations}, headers=headers
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


async def wait_for_job(
    client: httpx.AsyncClient, status_url: str, headers: dict[str, str], timeout: float = 180.0
) -> dict[str, Any]:
    """Poll the status endpoint as a client would, until the job leaves PROVISIONING."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(status_url, headers=headers)
        assert response.status_code == 200, response.text
        body = dict(response.json())
        if body["status"] not in ("PENDING", "PROVISIONING"):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"job still running: {body}"
        await asyncio.sleep(0.2)


def running_tasks(ecs: Any, cluster: str, deployment_id: str) -> list[dict[str, Any]]:
    arns = ecs.list_tasks(cluster=cluster, startedBy=deployment_id, desiredStatus="RUNNING")["taskArns"]
    if not arns:
        return []
    return list(ecs.describe_tasks(cluster=cluster, tasks=arns, include=["TAGS"])["tasks"])


def all_tasks_started_by(ecs: Any, cluster: str, deployment_id: str) -> list[str]:
    """Every task of a deployment, running or stopped."""
    arns: list[str] = []
    for status in ("RUNNING", "STOPPED"):
        arns += ecs.list_tasks(cluster=cluster, startedBy=deployment_id, desiredStatus=status)["taskArns"]
    return arns


@contextmanager
def api_process(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The real API as `uvicorn api.app:app` on a free port (real sockets), with only `env`
    (plus PATH) as its environment; yields its base URL and process, stops it after."""
    from devstack.procs import free_port, wait_for_port
    from settings import ROOT

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port("127.0.0.1", port, proc, "API")
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 60.0, every: float = 0.1
) -> None:
    """Until `condition()` (a plain or an async callable) is true; fails naming `what` after
    `timeout` seconds. The one polling loop of the suite."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)


async def job_rows(engine: AsyncEngine, cpo_id: str) -> tuple[int, int]:
    """The CPO's job rows and job_locations rows: what a request wrote, or did not."""
    async with engine.connect() as conn:
        jobs = (
            await conn.execute(text("SELECT count(*) FROM ocpp.jobs WHERE cpo_id = :c"), {"c": int(cpo_id)})
        ).scalar_one()
        rows = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM ocpp.job_locations l JOIN ocpp.jobs j ON j.id = l.job_id"
                    " WHERE j.cpo_id = :c"
                ),
                {"c": int(cpo_id)},
            )
        ).scalar_one()
    return int(jobs), int(rows)


def read_stack_env(folder: Path) -> dict[str, str]:
    """The settings a dev stack wrote to `folder/stack.env` (devstack.Stack.write_env)."""
    lines = (folder / "stack.env").read_text().splitlines()
    return {key: value.strip("'") for key, _, value in (line.partition("=") for line in lines if line)}


def still_running(proc: psutil.Process) -> bool:
    """Still running, and not a zombie waiting for its parent: what a stopped stack leaves none of."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
