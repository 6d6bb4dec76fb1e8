"""The floor: the product's work per location with nothing around it.

One asyncio script, `concurrency` locations in flight (32), each on a psycopg connection of its
own (raw SQL: no SQLAlchemy engine, session or ORM; no workflow engine), against the bench's
embedded PostgreSQL and moto. Per location, exactly what the product leaves behind:

1. one transaction: the rows of tables 1-9 (built by the product's own `_rows`, so the shapes,
   keys and values are the product's), written as `INSERT … ON CONFLICT DO NOTHING` in one
   pipeline, deployments PENDING;
2. per charger: one Secrets Manager CreateSecret and one ECS RunTask, the product's very requests
   (`activities.ecs_tasks.secret_request` / `run_task_request`), through aioboto3;
3. one transaction: the ecs_tasks rows (table 10), deployments RUNNING, EVSEs AVAILABLE, the
   location ACTIVE (version + 1, last_updated from PostgreSQL's clock).

What the floor leaves out is the product's bookkeeping, not its work: the job's rows
(job_locations states), the deployment's LAUNCHING/STARTING fence, the CPO's change lock, the
look-up before a repeated RunTask, retries beyond botocore's, and durability. The inputs are
normalized (as the API does before its 202) before the clock starts.

`FloorSteps` is also what the durable peer (bench/peer.py) runs as its steps: the peer then
differs from the floor by its engine alone.

Run by the bench as a process of its own (bench/runner.py): `--scenarios floor`.
"""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import SQLModel

from activities.ecs_client import ecs_client, secrets_client
from activities.ecs_tasks import run_task_request, secret_request
from activities.location_rows import LocationRowsActivities
from api.normalize import normalized_json
from api.schemas import BulkCreateRequest
from bench.runner import child_main, libpq_url
from bench.workload import body
from contracts.job_start import job_tuning
from contracts.payloads import ChargerTaskInput, LocationPlan, ProvisionInput
from contracts.vocabulary import DeploymentState, EvseStatus, LocationStatus
from db.job_input import NormalizedLocation
from db.models import PartnerOperation, utcnow
from settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_ecs import ECSClient
    from types_aiobotocore_secretsmanager import SecretsManagerClient


@cache
def _insert(model: type[SQLModel], columns: tuple[str, ...]) -> tuple[str, frozenset[str]]:
    """The table's INSERT … ON CONFLICT (primary key) DO NOTHING, and its JSONB columns."""
    table = model.__table__  # type: ignore[attr-defined]
    pk = ", ".join(c.name for c in table.primary_key.columns)
    sql = (
        f"INSERT INTO {table.fullname} ({', '.join(columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) ON CONFLICT ({pk}) DO NOTHING"
    )
    return sql, frozenset(c.name for c in table.columns if isinstance(c.type, JSONB))


def _param(value: Any, json: bool) -> Any:
    if json:
        return None if value is None else Jsonb(value)
    return value.value if isinstance(value, Enum) else value


INSERT_TASK = """
    INSERT INTO ocpp.ecs_tasks (task_arn, deployment_id, cluster, task_definition_arn, last_status,
                                desired_status, started_at, created_at, updated_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (deployment_id)
    DO UPDATE SET task_arn = EXCLUDED.task_arn, updated_at = EXCLUDED.updated_at"""
ACTIVATE = (
    "UPDATE ocpp.charger_deployments SET state = %s, updated_at = %s WHERE ocpi_location_id = %s",
    "UPDATE ocpp.ocpi_evses SET status = %s, last_updated = clock_timestamp() WHERE location_id = %s",
    "UPDATE ocpp.ocpi_locations SET status = %s, last_updated = clock_timestamp(), version = version + 1"
    " WHERE id = %s",
)


class Connections:
    """`size` psycopg connections, lent one at a time (the floor needs no pool library)."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self.idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        self.all: list[psycopg.AsyncConnection[Any]] = []

    async def open(self) -> None:
        self.all = list(
            await asyncio.gather(
                *(psycopg.AsyncConnection.connect(self.url, connect_timeout=5) for _ in range(self.size))
            )
        )
        for conn in self.all:
            self.idle.put_nowait(conn)

    @asynccontextmanager
    async def get(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        conn = await self.idle.get()
        try:
            yield conn
        finally:
            self.idle.put_nowait(conn)

    async def close(self) -> None:
        for conn in self.all:
            await conn.close()


class FloorSteps:
    """The four steps of one location (rows, secret, RunTask, activation), each stateless so
    that an engine may checkpoint it."""

    def __init__(
        self,
        settings: Settings,
        conns: Connections,
        ecs: ECSClient,
        secrets: SecretsManagerClient,
        cpo: PartnerOperation,
        job_id: str,
    ) -> None:
        self.settings = settings
        self.conns = conns
        self.ecs = ecs
        self.secrets = secrets
        self.cpo = cpo
        self.job_id = job_id
        self.tuning = job_tuning(settings)
        # only its pure row builder is used: no session, no engine
        self.builder = LocationRowsActivities(None, settings)  # type: ignore[arg-type]

    async def write_rows(self, index: int, loc_json: str) -> LocationPlan:
        loc = NormalizedLocation.model_validate_json(loc_json)
        inp = ProvisionInput(
            job_id=self.job_id, cpo_id=int(self.cpo.id or 0), index=index, tuning=self.tuning
        )
        plan = self.builder._plan(inp, loc)
        statements: list[tuple[str, list[tuple[Any, ...]]]] = []
        for model, rows in self.builder._rows(inp, loc, self.cpo, plan).items():
            if rows:
                columns = tuple(rows[0])
                sql, json_columns = _insert(model, columns)
                statements.append(
                    (sql, [tuple(_param(row[c], c in json_columns) for c in columns) for row in rows])
                )
        async with self.conns.get() as conn, conn.pipeline(), conn.transaction():
            cur = conn.cursor()
            for sql, params in statements:
                await cur.executemany(sql, params)
        return plan

    def charger(self, plan: LocationPlan, index: int, n: int) -> ChargerTaskInput:
        c = plan.chargers[n]
        return ChargerTaskInput(
            job_id=self.job_id,
            index=index,
            location_id=plan.location_id,
            deployment_id=c.deployment_id,
            identity=c.identity,
        )

    async def put_secret(self, inp: ChargerTaskInput) -> str:
        created = await self.secrets.create_secret(**secret_request(self.settings, inp))
        return str(created["ARN"])

    async def run_task(self, inp: ChargerTaskInput, secret_arn: str) -> dict[str, Any]:
        """The started task as ecs_tasks records it."""
        response = await self.ecs.run_task(**run_task_request(self.settings, inp, secret_arn))
        if response.get("failures") or not response.get("tasks"):
            raise RuntimeError(f"RunTask failed: {response.get('failures')}")
        task = response["tasks"][0]
        return {
            "taskArn": task["taskArn"],
            "deploymentId": inp.deployment_id,
            "taskDefinitionArn": task.get("taskDefinitionArn", self.settings.ecs_task_definition),
            "lastStatus": task.get("lastStatus", "PROVISIONING"),
            "desiredStatus": task.get("desiredStatus", "RUNNING"),
            "startedAt": task.get("startedAt") or task.get("createdAt"),
        }

    async def activate(self, plan: LocationPlan, tasks: list[dict[str, Any]]) -> None:
        now = utcnow()
        task_rows = [
            (
                t["taskArn"],
                t["deploymentId"],
                self.settings.ecs_cluster,
                t["taskDefinitionArn"],
                t["lastStatus"],
                t["desiredStatus"],
                (t["startedAt"] or now) if t["lastStatus"] == "RUNNING" else None,
                now,
                now,
            )
            for t in tasks
        ]
        deployments, evses, location = ACTIVATE
        async with self.conns.get() as conn, conn.pipeline(), conn.transaction():
            cur = conn.cursor()
            await cur.executemany(INSERT_TASK, task_rows)
            await cur.execute(deployments, (DeploymentState.RUNNING.value, now, plan.location_id))
            await cur.execute(evses, (EvseStatus.AVAILABLE.value, plan.location_id))
            await cur.execute(location, (LocationStatus.ACTIVE.value, plan.location_id))


def inputs(n: int, chargers: int, tag: str, job_id: str) -> list[str]:
    """What the product's job_locations.input holds for the bench's body: normalized JSON."""
    request = BulkCreateRequest.model_validate(body(n, chargers, tag))
    return [normalized_json(loc, job_id, i) for i, loc in enumerate(request.locations)]


async def load_cpo(conn: psycopg.AsyncConnection[Any], cpo_id: int) -> PartnerOperation:
    row = await (
        await conn.execute(
            "SELECT name, country_code, party_id FROM ocpp.partner_operations WHERE id = %s", (cpo_id,)
        )
    ).fetchone()
    if row is None:
        raise LookupError(f"no CPO {cpo_id}")
    return PartnerOperation(id=cpo_id, name=row[0], country_code=row[1], party_id=row[2])


async def verify(conn: psycopg.AsyncConnection[Any], job_id: str) -> dict[str, int]:
    """What the run left: active locations of the job, their ECS task rows (a check that the
    work was done, outside the timed part)."""
    row = await (
        await conn.execute(
            """SELECT count(DISTINCT l.id), count(t.task_arn)
           FROM ocpp.ocpi_locations l
           LEFT JOIN ocpp.charger_deployments d ON d.ocpi_location_id = l.id
           LEFT JOIN ocpp.ecs_tasks t ON t.deployment_id = d.id
           WHERE l.job_id = %s AND l.status = 'ACTIVE'""",
            (job_id,),
        )
    ).fetchone()
    assert row is not None
    return {"active_locations": int(row[0]), "task_rows": int(row[1])}


async def in_flight(
    items: list[str], concurrency: int, one: Callable[[int, str], Awaitable[None]]
) -> dict[str, Any]:
    """Run `one(index, input)` over all inputs, `concurrency` at a time; seconds and errors."""
    errors: Counter[str] = Counter()
    first: list[str] = []
    queue = iter(enumerate(items))

    async def lane() -> None:
        for index, item in queue:
            try:
                await one(index, item)
            except Exception as err:  # counted; the floor goes on
                errors[type(err).__name__] += 1
                if not first:
                    first.append(f"location {index}: {type(err).__name__}: {err}"[:300])
                    traceback.print_exc()

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return {"seconds": time.perf_counter() - started, "errors": dict(errors), "first_error": first}


class Resources:
    """The connections and AWS clients a floor or peer process holds for its run."""

    def __init__(self) -> None:
        self.conns: Connections
        self.admin: psycopg.AsyncConnection[Any]
        self.steps: FloorSteps
        self._exits: list[Any] = []

    async def open(self, settings: Settings, spec: dict[str, Any], job_prefix: str) -> list[str]:
        """Connect, and the normalized inputs of the run (its job id is drawn here)."""
        url = libpq_url(settings.database_url)
        self.admin = await psycopg.AsyncConnection.connect(url, autocommit=True)
        self.conns = Connections(url, int(spec["concurrency"]))
        await self.conns.open()
        ecs_cm, sm_cm = ecs_client(settings), secrets_client(settings)
        ecs, sm = await ecs_cm.__aenter__(), await sm_cm.__aenter__()
        self._exits = [ecs_cm, sm_cm]
        job_id = f"{job_prefix}-{uuid.uuid4().hex[:24]}"
        cpo = await load_cpo(self.admin, int(spec["cpo_id"]))
        self.steps = FloorSteps(settings, self.conns, ecs, sm, cpo, job_id)
        return inputs(int(spec["locations"]), int(spec["chargers"]), str(spec["tag"]), job_id)

    async def close(self) -> None:
        for cm in reversed(self._exits):
            await cm.__aexit__(None, None, None)
        if hasattr(self, "conns"):
            await self.conns.close()
        if hasattr(self, "admin"):
            await self.admin.close()


RESOURCES = Resources()


async def prepare(settings: Settings, spec: dict[str, Any]) -> Callable[[], Awaitable[dict[str, Any]]]:
    items = await RESOURCES.open(settings, spec, "floor")
    steps = RESOURCES.steps

    async def one(index: int, loc_json: str) -> None:
        plan = await steps.write_rows(index, loc_json)

        async def start(n: int) -> dict[str, Any]:
            inp = steps.charger(plan, index, n)
            return await steps.run_task(inp, await steps.put_secret(inp))

        tasks = await asyncio.gather(*(start(n) for n in range(len(plan.chargers))))
        await steps.activate(plan, list(tasks))

    async def work() -> dict[str, Any]:
        result = await in_flight(items, int(spec["concurrency"]), one)
        return {**result, **await verify(RESOURCES.admin, steps.job_id)}

    return work


if __name__ == "__main__":
    child_main(prepare, RESOURCES.close)
