"""The fault suite's stack and steps: `make run`'s stack (devstack.Stack) in a temporary folder
on free ports — its own PostgreSQL, Temporal dev server (SQLite file, so it can restart), moto
behind the fault-injecting proxy, the worker as a subprocess — and a job of the suite, its books
checked by the audit after every fault."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType

from api.app import create_app
from contracts import ids
from devstack.postgres import EmbeddedPostgres
from devstack.procs import free_port
from devstack.stack import Ports, Stack, settings_env, settings_from_env
from settings import Settings
from tests.fault_proxy import FaultProxy
from tests.helpers import create_cpo, expected_counts, running_tasks, table_counts
from tests.suite_stack import asgi_client
from worker.audit import audit, render

JOB_SIZE = 200


ADMIN = "faults-admin-token-0123456789"

# the suite's own settings over the stack's
OVERRIDES: dict[str, Any] = {
    "admin_token": ADMIN,
    "dev_stack": True,
    "task_queue": "faults-main",
    "ecs_task_queue": "faults-ecs",
    "child_window": 25,
    "activity_timeout_seconds": 6,
    "activity_max_interval_seconds": 2,
    "activity_max_attempts": 40,
    "worker_shutdown_grace_seconds": 5,
    "sync_wait_seconds": 30,
    "worker_set_current_version": True,  # versioned workers, as in production
}


class FaultStack(Stack):
    """PostgreSQL (no fsync), the dev server (no Web UI; matched as `make run` matches: one
    partition per task queue, the new matcher, fairness), moto with the fault proxy in front as
    the workers' and the API's AWS endpoint, and worker 1. Nothing restarts a worker that exits:
    the tests kill and start workers themselves. The suite's API runs in-process (conftest)."""

    def __init__(self, root: Path) -> None:
        ports = Ports(free_port(), free_port(), 0, free_port(), free_port(), 0)
        super().__init__(
            root, ports, use_environment=False, say=lambda m: print(f"[faults] {m}"), fairness=True, nice=0
        )
        self.root = self.data_dir
        self.proxy: FaultProxy | None = None
        self.settings: Settings | None = None

    def start(self) -> Settings:
        env = self.start_services(durable=False, aws_front=self._proxy_to)
        self.settings = settings_from_env(env, **OVERRIDES)
        self.start_app(settings_env(self.settings), api=False)
        return self.settings

    def _proxy_to(self, moto_url: str) -> str:
        self.proxy = FaultProxy(moto_url, seed=11)
        self.proxy.start()
        return self.proxy.url

    @property
    def pg(self) -> EmbeddedPostgres:
        assert self.postgres is not None
        return self.postgres

    @property
    def worker(self) -> subprocess.Popen[bytes] | None:
        return self.children.get("worker-1")

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(10)

    def stop(self) -> None:
        super().stop()
        if self.proxy is not None:
            self.proxy.stop()

    def worker_log_tail(self) -> str:
        return (self.logs / "worker-1.log").read_text(errors="replace")[-3000:]


class Job:
    """One 200-location job of the fault suite, polled like a client polls it."""

    def __init__(
        self,
        api: httpx.AsyncClient,
        cpo_id: str,
        token: dict[str, str],
        body: dict[str, Any],
        accepted: dict[str, Any],
    ) -> None:
        self.api, self.cpo_id, self.token, self.body = api, cpo_id, token, body
        self.job_id: str = accepted["job_id"]
        self.status_url: str = accepted["status_url"]
        self.started = time.monotonic()

    @classmethod
    async def submit(cls, api: httpx.AsyncClient, tag: str) -> Job:
        cpo_id, token = await create_cpo(api, {"Authorization": f"Bearer {ADMIN}"})
        body = {
            "locations": [
                {
                    "name": f"{tag} {i}",
                    "address": "Rue de la Loi 16",
                    "city": "Brussels",
                    "country": "BE",
                    "coordinates": {"latitude": 50.8, "longitude": 4.3},
                    "timezone": "Europe/Brussels",
                    "chargers": [{"identity": f"{tag}-{cpo_id}-{i}", "connector_type": "Type2"}],
                }
                for i in range(JOB_SIZE)
            ]
        }
        response = await api.post(f"/ocpi/cpos/{cpo_id}/locations", json=body, headers=token)
        assert response.status_code == 202, response.text
        return cls(api, cpo_id, token, body, response.json())

    async def status(self) -> dict[str, Any]:
        # one page holds the whole job's results (pages are 100 locations by default)
        response = await self.api.get(self.status_url, headers=self.token, params={"limit": JOB_SIZE})
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def wait_progress(self, done: int, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while True:
            progress = (await self.status())["progress"]
            if progress["succeeded"] + progress["failed"] >= done:
                return
            assert time.monotonic() < deadline, f"stuck at {progress}"
            await asyncio.sleep(0.3)

    async def wait_end(self, stack: FaultStack, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                body = await self.status()
            except (httpx.HTTPError, AssertionError):
                body = {"status": "PROVISIONING"}  # a part of the stack is restarting
            if body["status"] not in ("PENDING", "PROVISIONING"):
                self.elapsed = time.monotonic() - self.started
                return body
            assert time.monotonic() < deadline, f"job still running; worker log:\n{stack.worker_log_tail()}"
            await asyncio.sleep(0.5)


async def check_books(
    stack: FaultStack, db: AsyncEngine, job: Job, result: dict[str, Any], what: str
) -> None:
    """The oracle: audit clean, and the ten tables hold exactly the READY locations' rows."""
    assert stack.settings is not None
    report = await audit(stack.settings, db, cpo_id=int(job.cpo_id))
    ready = [loc for loc in result["results"]["locations"] if loc["status"] == "READY"]
    print(
        f"\n[{what}] {JOB_SIZE} locations → {result['status']} in {job.elapsed:.1f}s; "
        f"audit: {report.locations_by_state}, running tasks {report.running_tasks}, duplicates "
        f"{report.duplicate_tasks}, orphans {report.orphan_tasks}, without task "
        f"{report.deployments_without_task}, half-written {report.half_written_locations}"
    )
    assert report.ok, render(report)
    assert report.locations_by_state == ({"ACTIVE": len(ready)} if ready else {})
    assert report.running_tasks == len(ready)
    assert await table_counts(db, job.cpo_id) == expected_counts([[1]] * len(ready))


# ------------------------------------------------------------------ small jobs, one fault each
# Each of these runs a job of a few locations (so the whole group adds about a minute) on the
# same stack, and ends with the same oracle as above: the audit clean, and the ten tables and
# ECS holding exactly what the READY (and REMOVED) locations should.


@asynccontextmanager
async def api_with(stack: FaultStack, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A second in-process API whose settings differ (a job's tuning comes from the API)."""
    assert stack.settings is not None
    app = create_app(stack.settings.model_copy(update=overrides))
    async with asgi_client(app, "http://faults", timeout=60) as client:
        yield client


def identity(tag: str, cpo_id: str, index: int, charger: int = 0) -> str:
    return f"{tag}-{cpo_id}-{index}-{charger}"


def marker(tag: str, cpo_id: str, index: int, charger: int = 0) -> str:
    """What the proxy looks for in an ECS call's body: one charger's identity, quotes included."""
    return f'"{identity(tag, cpo_id, index, charger)}"'


async def small_job(
    api: httpx.AsyncClient,
    tag: str,
    chargers: list[int],
    arm: Callable[[str], None] | None = None,
) -> Job:
    """A job of len(chargers) locations, location i with chargers[i] chargers; `arm` gets the
    new CPO's id before the POST (the identities embed it)."""
    cpo_id, token = await create_cpo(api, {"Authorization": f"Bearer {ADMIN}"})
    if arm is not None:
        arm(cpo_id)
    body = {
        "locations": [
            {
                "name": f"{tag} {i}",
                "address": "Rue de la Loi 16",
                "city": "Brussels",
                "country": "BE",
                "coordinates": {"latitude": 50.8, "longitude": 4.3},
                "timezone": "Europe/Brussels",
                "chargers": [
                    {"identity": identity(tag, cpo_id, i, c), "connector_type": "Type2"} for c in range(n)
                ],
            }
            for i, n in enumerate(chargers)
        ]
    }
    response = await api.post(f"/ocpi/cpos/{cpo_id}/locations", json=body, headers=token)
    assert response.status_code == 202, response.text
    return Job(api, cpo_id, token, body, response.json())


async def check_small(
    stack: FaultStack,
    db: AsyncEngine,
    job: Job,
    result: dict[str, Any],
    chargers: list[int],
    what: str,
    removed: tuple[int, ...] = (),
) -> None:
    """The oracle for a small job: the audit clean, one RUNNING task per charger of a READY
    location, none of any other, and exactly their rows (REMOVED ones: only their OCPI rows)."""
    assert stack.settings is not None
    started = time.monotonic()
    report = await audit(stack.settings, db, cpo_id=int(job.cpo_id))
    audited = time.monotonic() - started
    ready = [
        loc["index"]
        for loc in result["results"]["locations"]
        if loc["status"] == "READY" and loc["index"] not in removed
    ]
    print(
        f"\n[{what}] {len(chargers)} locations → {result['status']} in {job.elapsed:.1f}s; "
        f"audit: {report.locations_by_state}, running tasks {report.running_tasks}, duplicates "
        f"{report.duplicate_tasks}, orphans {report.orphan_tasks}, without task "
        f"{report.deployments_without_task}, half-written {report.half_written_locations}, "
        f"lost {report.lost_locations} (audit {audited:.1f}s)"
    )
    assert report.ok, render(report)
    states = {"ACTIVE": len(ready), "REMOVED": len(removed)}
    assert report.locations_by_state == {k: v for k, v in states.items() if v}
    assert report.running_tasks == sum(chargers[i] for i in ready)
    assert await table_counts(db, job.cpo_id) == expected_counts(
        [[1] * chargers[i] for i in ready], removed=[[1] * chargers[i] for i in removed]
    )


def running_of(stack: FaultStack, job: Job, index: int, chargers: int) -> list[int]:
    """RUNNING tasks in moto of each charger of one location (the test's own view of ECS)."""
    assert stack.settings is not None and stack.moto is not None
    ecs = boto3.client(
        "ecs",
        region_name="eu-west-1",
        endpoint_url=stack.moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return [
        len(running_tasks(ecs, stack.settings.ecs_cluster, ids.deployment_id(job.job_id, index, c)))
        for c in range(chargers)
    ]


async def state_is(db: AsyncEngine, location_id: str, status: str) -> bool:
    return await location_state(db, location_id) == status


async def location_state(db: AsyncEngine, location_id: str) -> str | None:
    async with db.connect() as conn:
        found = (
            await conn.execute(
                text("SELECT status FROM ocpp.ocpi_locations WHERE id = :i"), {"i": location_id}
            )
        ).scalar_one_or_none()
    return None if found is None else str(found)


async def recovery_after_kill(
    client: Any, job_id: str, killed_at: datetime, phases: dict[str, tuple[float, float]] | None = None
) -> dict[str, float]:
    """Seconds from the kill to the completion, on another worker, of each task the killed worker
    held: a workflow task that timed out (its start-to-close, or its schedule-to-start on the dead
    worker's sticky queue) until the workflow's next completed workflow task; an activity whose
    attempt timed out until its completion. Read from the histories of every workflow of the job.
    `phases` gets, for each workflow task, the seconds from the kill to its (first) timeout and to
    the start of the attempt that completed: the rest is that attempt's own run."""
    stalls: dict[str, float] = {}
    runs = [(w.id, w.run_id) async for w in client.list_workflows(f'WorkflowId STARTS_WITH "{job_id}"')]
    for workflow_id, run_id in runs:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        waiting_since: datetime | None = None
        restarted = killed_at
        retried: set[int] = set()  # activities whose earlier attempt timed out after the kill
        for event in history.events:
            at = event.event_time.ToDatetime(tzinfo=UTC)
            kind = EventType.Name(event.event_type)
            if kind == "EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT" and at >= killed_at and waiting_since is None:
                waiting_since = at
            elif kind == "EVENT_TYPE_WORKFLOW_TASK_STARTED":
                restarted = at
            elif kind == "EVENT_TYPE_WORKFLOW_TASK_COMPLETED" and waiting_since is not None:
                name = f"{workflow_id}/{run_id} workflow task"
                stalls[name] = (at - killed_at).total_seconds()
                if phases is not None:
                    phases[name] = (
                        (waiting_since - killed_at).total_seconds(),
                        (restarted - killed_at).total_seconds(),
                    )
                waiting_since = None
            elif kind == "EVENT_TYPE_ACTIVITY_TASK_STARTED" and at >= killed_at:
                started = event.activity_task_started_event_attributes
                if started.attempt > 1 and started.last_failure.HasField("timeout_failure_info"):
                    retried.add(started.scheduled_event_id)
            elif kind == "EVENT_TYPE_ACTIVITY_TASK_COMPLETED":
                scheduled = event.activity_task_completed_event_attributes.scheduled_event_id
                if scheduled in retried:
                    stalls[f"{workflow_id}/{run_id} activity {scheduled}"] = (at - killed_at).total_seconds()
    return stalls
