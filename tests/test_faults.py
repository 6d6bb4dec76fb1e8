"""Nothing lost, nothing doubled: real processes faulted in the middle of 200-location jobs.

Unlike the rest of the suite, time must really pass here, so this module runs its own stack:
the Temporal dev server (SQLite file, so it can restart), its own PostgreSQL, moto behind the
fault-injecting proxy, and the worker as a subprocess that is killed and restarted. The API runs
in-process. After every fault the audit must find 0 duplicates, 0 orphans, 0 half-written
locations, and the ten tables must hold exactly the READY locations' rows.

Run alone with `make test-faults`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import pytest_asyncio
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError

from api.app import create_app
from contracts import ids
from contracts.temporal import connect
from db.engine import make_engine
from devstack.moto_ecs import MotoServer, bootstrap_ecs
from devstack.postgres import EmbeddedPostgres
from devstack.procs import free_port
from devstack.temporal import TemporalDevServer, matching_config
from settings import ROOT, Settings
from tests.fault_proxy import Fault, FaultProxy
from tests.helpers import create_cpo, eventually, expected_counts, running_tasks, table_counts
from tests.suite_stack import asgi_client
from worker.audit import audit, render
from worker.histories import work_by_identity

pytestmark = pytest.mark.faults

JOB_SIZE = 200
ADMIN = "faults-admin-token-0123456789"


class FaultStack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pg = EmbeddedPostgres(root / "pg", free_port(), durable=False)
        # matched as `make run` matches (one partition per task queue, the new matcher, fairness)
        self.temporal = TemporalDevServer(free_port(), None, root / "temporal.db",
                                          dynamic_config=matching_config(True),
                                          log_file=root / "temporal.log")
        self.moto = MotoServer(free_port(), root / "moto.log")
        self.proxy: FaultProxy | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.settings: Settings | None = None

    def start(self) -> Settings:
        self.pg.start()
        self.pg.create_database("ocpplab")
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.attributes["database_url"] = self.pg.url("ocpplab")
        command.upgrade(cfg, "head")
        self.temporal.start()
        self.moto.start()
        self.proxy = FaultProxy(self.moto.url, seed=11)
        self.proxy.start()
        boot = bootstrap_ecs(self.moto.url, "eu-west-1", "faults", "ocpplab-charger", "charger", "sim")
        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            admin_token=ADMIN, dev_stack=True, database_url=self.pg.url("ocpplab"),
            temporal_address=self.temporal.address, aws_endpoint_url=self.proxy.url,
            aws_region="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing",
            ecs_cluster="faults", ecs_subnets=boot.subnet_ids, ecs_security_groups=boot.security_group_ids,
            task_queue="faults-main", ecs_task_queue="faults-ecs", child_window=25,
            activity_timeout_seconds=6, activity_max_interval_seconds=2, activity_max_attempts=40,
            worker_shutdown_grace_seconds=5, sync_wait_seconds=30,
            worker_set_current_version=True,  # versioned workers, as in production
        )
        self.start_worker()
        return self.settings

    def worker_env(self) -> dict[str, str]:
        assert self.settings is not None
        env = {k.upper(): (json.dumps(v) if isinstance(v, list) else str(v))
               for k, v in self.settings.model_dump().items() if v is not None}
        return {**os.environ, **env, "PYTHONUNBUFFERED": "1"}

    def start_worker(self) -> None:
        self.worker = self.spawn_worker("worker.log")

    def spawn_worker(self, log_name: str) -> subprocess.Popen[bytes]:
        with open(self.root / log_name, "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=self.worker_env(),
                                    stdout=log, stderr=subprocess.STDOUT)

    def start_api(self, port: int) -> subprocess.Popen[bytes]:
        log = open(self.root / "api.log", "ab")
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(port),
             "--timeout-graceful-shutdown", "30"],
            cwd=ROOT, env=self.worker_env(), stdout=log, stderr=subprocess.STDOUT,
        )

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(10)

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(15)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        if self.proxy is not None:
            self.proxy.stop()
        self.moto.stop()
        self.temporal.stop()
        self.pg.stop()

    def worker_log_tail(self) -> str:
        return (self.root / "worker.log").read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def stack() -> Iterator[FaultStack]:
    with tempfile.TemporaryDirectory(prefix="ocpplab-faults-") as folder:
        fault_stack = FaultStack(Path(folder))
        try:
            fault_stack.start()
            yield fault_stack
        finally:
            fault_stack.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(stack: FaultStack) -> AsyncIterator[httpx.AsyncClient]:
    assert stack.settings is not None
    app = create_app(stack.settings)
    async with asgi_client(app, "http://faults", timeout=60) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def db(stack: FaultStack) -> AsyncIterator[AsyncEngine]:
    assert stack.settings is not None
    engine = make_engine(stack.settings)
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
def _clear_faults(stack: FaultStack) -> Iterator[None]:
    yield
    assert stack.proxy is not None
    stack.proxy.clear()


class Job:
    """One 200-location job of the fault suite, polled like a client polls it."""

    def __init__(self, api: httpx.AsyncClient, cpo_id: str, token: dict[str, str], body: dict[str, Any],
                 accepted: dict[str, Any]) -> None:
        self.api, self.cpo_id, self.token, self.body = api, cpo_id, token, body
        self.job_id: str = accepted["job_id"]
        self.status_url: str = accepted["status_url"]
        self.started = time.monotonic()

    @classmethod
    async def submit(cls, api: httpx.AsyncClient, tag: str) -> Job:
        cpo_id, token = await create_cpo(api, {"Authorization": f"Bearer {ADMIN}"})
        body = {"locations": [
            {"name": f"{tag} {i}", "address": "Rue de la Loi 16", "city": "Brussels", "country": "BE",
             "coordinates": {"latitude": 50.8, "longitude": 4.3}, "timezone": "Europe/Brussels",
             "chargers": [{"identity": f"{tag}-{cpo_id}-{i}", "connector_type": "Type2"}]}
            for i in range(JOB_SIZE)
        ]}
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
    print(f"\n[{what}] {JOB_SIZE} locations → {result['status']} in {job.elapsed:.1f}s; "
          f"audit: {report.locations_by_state}, running tasks {report.running_tasks}, duplicates "
          f"{report.duplicate_tasks}, orphans {report.orphan_tasks}, without task "
          f"{report.deployments_without_task}, half-written {report.half_written_locations}")
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
    api: httpx.AsyncClient, tag: str, chargers: list[int], arm: Callable[[str], None] | None = None,
) -> Job:
    """A job of len(chargers) locations, location i with chargers[i] chargers; `arm` gets the
    new CPO's id before the POST (the identities embed it)."""
    cpo_id, token = await create_cpo(api, {"Authorization": f"Bearer {ADMIN}"})
    if arm is not None:
        arm(cpo_id)
    body = {"locations": [
        {"name": f"{tag} {i}", "address": "Rue de la Loi 16", "city": "Brussels", "country": "BE",
         "coordinates": {"latitude": 50.8, "longitude": 4.3}, "timezone": "Europe/Brussels",
         "chargers": [{"identity": identity(tag, cpo_id, i, c), "connector_type": "Type2"} for c in range(n)]}
        for i, n in enumerate(chargers)
    ]}
    response = await api.post(f"/ocpi/cpos/{cpo_id}/locations", json=body, headers=token)
    assert response.status_code == 202, response.text
    return Job(api, cpo_id, token, body, response.json())


async def check_small(
    stack: FaultStack, db: AsyncEngine, job: Job, result: dict[str, Any], chargers: list[int], what: str,
    removed: tuple[int, ...] = (),
) -> None:
    """The oracle for a small job: the audit clean, one RUNNING task per charger of a READY
    location, none of any other, and exactly their rows (REMOVED ones: only their OCPI rows)."""
    assert stack.settings is not None
    started = time.monotonic()
    report = await audit(stack.settings, db, cpo_id=int(job.cpo_id))
    audited = time.monotonic() - started
    ready = [loc["index"] for loc in result["results"]["locations"]
             if loc["status"] == "READY" and loc["index"] not in removed]
    print(f"\n[{what}] {len(chargers)} locations → {result['status']} in {job.elapsed:.1f}s; "
          f"audit: {report.locations_by_state}, running tasks {report.running_tasks}, duplicates "
          f"{report.duplicate_tasks}, orphans {report.orphan_tasks}, without task "
          f"{report.deployments_without_task}, half-written {report.half_written_locations}, "
          f"lost {report.lost_locations} (audit {audited:.1f}s)")
    assert report.ok, render(report)
    states = {"ACTIVE": len(ready), "REMOVED": len(removed)}
    assert report.locations_by_state == {k: v for k, v in states.items() if v}
    assert report.running_tasks == sum(chargers[i] for i in ready)
    assert await table_counts(db, job.cpo_id) == expected_counts(
        [[1] * chargers[i] for i in ready], removed=[[1] * chargers[i] for i in removed])


def running_of(stack: FaultStack, job: Job, index: int, chargers: int) -> list[int]:
    """RUNNING tasks in moto of each charger of one location (the test's own view of ECS)."""
    assert stack.settings is not None
    ecs = boto3.client("ecs", region_name="eu-west-1", endpoint_url=stack.moto.url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    return [len(running_tasks(ecs, stack.settings.ecs_cluster, ids.deployment_id(job.job_id, index, c)))
            for c in range(chargers)]


async def test_run_task_answer_lost(stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine) -> None:
    """RunTask reaches moto (a task starts) and its answer is lost on the way back; moto, unlike
    ECS, ignores clientToken, so every re-send starts one more task. Location 0: one answer lost,
    botocore re-sends within the attempt. Location 1: every send of the first attempt lost, so
    Temporal retries the activity, which adopts a live task. One task per charger in the end."""
    assert stack.proxy is not None
    proxy = stack.proxy
    chargers = [1, 1, 1]
    faults: list[Fault] = []

    def arm(cpo_id: str) -> None:
        faults.append(proxy.arm(Fault("RunTask", "lose_response", remaining=1,
                                      body_contains=marker("LOST", cpo_id, 0))))
        faults.append(proxy.arm(Fault("RunTask", "lose_response", remaining=4,
                                      body_contains=marker("LOST", cpo_id, 1))))

    job = await small_job(api, "LOST", chargers, arm)
    result = await job.wait_end(stack)
    assert result["status"] == "READY", result["error"]
    assert [f.injected for f in faults] == [1, 4]  # 1 and 4 tasks started whose answer never came
    assert [running_of(stack, job, i, 1) for i in range(len(chargers))] == [[1]] * len(chargers)
    await check_small(stack, db, job, result, chargers, "RunTask answers lost")


async def test_stop_task_failing_during_compensation(
    stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """Location 0's second charger is refused for good after its first one started; while the
    location compensates, StopTask fails (5xx) for a while: compensation retries until its task
    is stopped and its rows are gone."""
    assert stack.proxy is not None
    proxy = stack.proxy
    chargers = [2, 1, 1, 1]
    stop_errors = proxy.arm(Fault("StopTask", "server_error", remaining=6))

    def arm(cpo_id: str) -> None:
        proxy.arm(Fault("RunTask", "invalid_parameter", body_contains=marker("STOPF", cpo_id, 0, 1)))

    job = await small_job(api, "STOPF", chargers, arm)
    result = await job.wait_end(stack)
    assert result["status"] == "FAILED"
    doomed = result["results"]["locations"][0]
    assert (doomed["status"], doomed["error"]["code"]) == ("FAILED", "ECS_INVALID_PARAMETER")
    assert stop_errors.injected == 6  # more than botocore's 4 sends: Temporal retried the stop
    assert running_of(stack, job, 0, 2) == [0, 0]
    await check_small(stack, db, job, result, chargers, "StopTask failing during compensation")


async def test_worker_killed_during_a_compensation_and_a_decommission(
    stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """kill -9 of the worker while a failed location (job B's location 0, its second charger
    refused for good) is stopping its task, and a DELETEd location (job A's location 0) is
    being decommissioned, both StopTasks held up in the proxy: the next worker finishes both;
    no task or OCPP row is left, the DELETEd location is gone (REMOVED for OCPI)."""
    assert stack.proxy is not None
    proxy = stack.proxy
    chargers = [2, 1]
    first = await small_job(api, "KDEL", chargers)
    first_result = await first.wait_end(stack)
    assert first_result["status"] == "READY", first_result["error"]
    deleted = first_result["results"]["locations"][0]["location_id"]
    url = f"/ocpi/cpos/{first.cpo_id}/locations/{deleted}"
    slow_stops = proxy.arm(Fault("StopTask", "delay", remaining=2, delay_seconds=4))

    def arm(cpo_id: str) -> None:
        proxy.arm(Fault("RunTask", "invalid_parameter", body_contains=marker("KCMP", cpo_id, 0, 1)))

    async with api_with(stack, sync_wait_seconds=1) as quick:
        second = await small_job(api, "KCMP", chargers, arm)
        await eventually(lambda: slow_stops.injected >= 1, "the compensation's StopTask")
        deleting = await quick.delete(url, headers=first.token)
        await eventually(lambda: slow_stops.injected >= 2, "the decommission's StopTask")
    assert deleting.status_code == 202, deleting.text  # not finished within 1 s: its StopTask waits
    # caught in the middle: both locations' tasks still run, and their rows are there
    assert running_of(stack, second, 0, 2) == [1, 0] and running_of(stack, first, 0, 2) == [1, 1]
    stack.kill_worker()
    await asyncio.sleep(1)
    stack.start_worker()
    second_result = await second.wait_end(stack)
    assert second_result["status"] == "FAILED"
    assert second_result["results"]["locations"][0]["error"]["code"] == "ECS_INVALID_PARAMETER"
    await eventually(lambda: state_is(db, deleted, "REMOVED"), "the decommission", timeout=90)
    assert (await api.get(url, headers=first.token)).status_code == 404
    assert running_of(stack, second, 0, 2) == [0, 0] and running_of(stack, first, 0, 2) == [0, 0]
    await check_small(stack, db, second, second_result, chargers, "kill -9 during a compensation")
    await check_small(stack, db, first, first_result, chargers, "kill -9 during a decommission",
                      removed=(0,))


async def test_ecs_unreachable_longer_than_the_retry_budget(
    stack: FaultStack, db: AsyncEngine
) -> None:
    """Every ECS call is dropped for longer than the activity retry budget (2 attempts here):
    the locations that were starting end FAILED with ECS_UNAVAILABLE (retryable) once their
    compensation, which retries without limit, gets through; the others go READY after."""
    assert stack.proxy is not None and stack.settings is not None
    proxy = stack.proxy
    chargers = [1, 1, 1, 1]
    async with api_with(stack, child_window=2, activity_max_attempts=2) as small_budget:
        outage = [proxy.arm(Fault(action, "drop"))
                  for action in ("RunTask", "ListTasks", "DescribeTasks", "StopTask")]
        job = await small_job(small_budget, "DOWN", chargers)
        temporal = await connect(stack.settings)

        async def compensating() -> bool:
            handles = [temporal.get_workflow_handle(ids.provision_workflow_id(job.job_id, i)) for i in (0, 1)]
            try:
                steps = [await handle.query("step", rpc_timeout=timedelta(seconds=5)) for handle in handles]
            except RPCError:  # not started yet
                return False
            return all(str(step).startswith("compensating") for step in steps)

        await eventually(compensating, "the first two locations' retry budget", timeout=90, every=0.2)
        for fault in outage:  # ECS is back
            fault.remaining = 0
        result = await job.wait_end(stack)
    print(f"\n[ECS outage] calls dropped per action: {[f.injected for f in outage]}")
    assert result["status"] == "FAILED"
    states = [(loc["status"], (loc["error"] or {}).get("code")) for loc in result["results"]["locations"]]
    assert states[:2] == [("FAILED", "ECS_UNAVAILABLE")] * 2
    assert states[2:] == [("READY", None)] * 2
    assert result["results"]["locations"][0]["error"]["retryable"] is True
    await check_small(stack, db, job, result, chargers, "ECS unreachable beyond the retry budget")


async def state_is(db: AsyncEngine, location_id: str, status: str) -> bool:
    return await location_state(db, location_id) == status


async def location_state(db: AsyncEngine, location_id: str) -> str | None:
    async with db.connect() as conn:
        found = (await conn.execute(text("SELECT status FROM ocpp.ocpi_locations WHERE id = :i"),
                                    {"i": location_id})).scalar_one_or_none()
    return None if found is None else str(found)


async def test_same_body_posted_twice_at_once_without_a_key(
    stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """Without an Idempotency-Key, the same body POSTed twice is two requests: the first job
    provisions the chargers and the second is refused 422, their identities being taken, even
    when both arrive at once. Never a charger twice, never the locations split over two jobs."""
    cpo_id, token = await create_cpo(api, {"Authorization": f"Bearer {ADMIN}"})
    chargers = [1, 1, 1, 1]
    body = {"locations": [
        {"name": f"Twice {i}", "address": "Rue de la Loi 16", "city": "Brussels", "country": "BE",
         "coordinates": {"latitude": 50.8, "longitude": 4.3}, "timezone": "Europe/Brussels",
         "chargers": [{"identity": identity("TWICE", cpo_id, i), "connector_type": "Type2"}]}
        for i in range(len(chargers))
    ]}
    answers = await asyncio.gather(*(api.post(f"/ocpi/cpos/{cpo_id}/locations", json=body, headers=token)
                                      for _ in range(2)))
    print(f"\n[same body twice] answers {[a.status_code for a in answers]}")
    assert sorted(a.status_code for a in answers) == [202, 422], [a.text for a in answers]
    accepted = next(a for a in answers if a.status_code == 202)
    refused = next(a for a in answers if a.status_code == 422)
    assert {e["type"] for e in refused.json()["errors"]} == {"identity_taken"}
    job = Job(api, cpo_id, token, body, accepted.json())
    result = await job.wait_end(stack)
    assert result["status"] == "READY", result["error"]
    await check_small(stack, db, job, result, chargers, "same body POSTed twice at once")
    async with db.connect() as conn:
        jobs = (await conn.execute(text("SELECT count(*) FROM ocpp.jobs WHERE cpo_id = :c"),
                                   {"c": int(cpo_id)})).scalar_one()
        identities = (await conn.execute(text(
            "SELECT count(*), count(DISTINCT identity) FROM ocpp.charge_points WHERE network_id = :c"),
            {"c": int(cpo_id)})).one()
    assert jobs == 1 and tuple(identities) == (len(chargers), len(chargers))


async def test_delete_of_locations_while_their_job_runs(
    stack: FaultStack, db: AsyncEngine
) -> None:
    """While its job still runs (two locations at a time): DELETE of a location being
    provisioned is 409 and changes nothing; DELETE of a location already READY removes it at
    once (its job's result still counts it READY). The job ends READY and the books agree."""
    assert stack.proxy is not None
    proxy = stack.proxy
    chargers = [1, 1, 1, 1]
    slow: list[Fault] = []

    def arm(cpo_id: str) -> None:  # location 2 takes a while to start its task
        slow.append(proxy.arm(Fault("RunTask", "delay", delay_seconds=4,
                                    body_contains=marker("DJOB", cpo_id, 2))))

    async with api_with(stack, child_window=2) as api:
        job = await small_job(api, "DJOB", chargers, arm)
        provisioning = ids.location_id(job.job_id, 2)
        await eventually(lambda: slow[0].injected >= 1, "location 2's RunTask")
        ready = ids.location_id(job.job_id, 0)
        await eventually(lambda: state_is(db, ready, "ACTIVE"), "location 0 READY", timeout=90)
        assert await location_state(db, provisioning) == "PROVISIONING"
        refused = await api.delete(f"/ocpi/cpos/{job.cpo_id}/locations/{provisioning}", headers=job.token)
        removed = await api.delete(f"/ocpi/cpos/{job.cpo_id}/locations/{ready}", headers=job.token)
        assert (await job.status())["status"] == "PROVISIONING"  # all this while the job runs
        result = await job.wait_end(stack)
    assert refused.status_code == 409 and refused.json()["code"] == "LOCATION_PROVISIONING", refused.text
    assert removed.status_code == 204, removed.text
    assert result["status"] == "READY", result["error"]
    assert [loc["status"] for loc in result["results"]["locations"]] == ["READY"] * len(chargers)
    assert await location_state(db, ready) == "REMOVED"
    assert running_of(stack, job, 0, 1) == [0] and running_of(stack, job, 2, 1) == [1]
    await check_small(stack, db, job, result, chargers, "DELETE while the job runs", removed=(0,))


async def test_worker_killed_three_times(stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine) -> None:
    job = await Job.submit(api, "KILL")
    for fraction in (0.15, 0.45, 0.75):
        await job.wait_progress(int(JOB_SIZE * fraction))
        stack.kill_worker()
        await asyncio.sleep(1)
        stack.start_worker()
    result = await job.wait_end(stack)
    assert result["status"] == "READY", result["error"]
    await check_books(stack, db, job, result, "kill -9 worker x3")


async def test_two_workers_one_killed(stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine) -> None:
    """Two worker processes share a job; one is killed with SIGKILL mid-job; the other one
    takes over what the dead one held (after its timeouts) and the job reaches READY."""
    assert stack.worker is not None and stack.settings is not None
    first = stack.worker
    second = stack.spawn_worker("worker-2.log")
    try:
        job = await Job.submit(api, "TWO")
        await job.wait_progress(JOB_SIZE // 3)
        killed_at = datetime.now(UTC)
        second.send_signal(signal.SIGKILL)
        await asyncio.to_thread(second.wait, 10)
        result = await job.wait_end(stack)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    assert result["status"] == "READY", result["error"]
    await check_books(stack, db, job, result, "two workers, one kill -9")
    work = await work_by_identity(await connect(stack.settings), job.job_id)
    per_pid = {kind: {int(identity.split("@")[0]): n for identity, n in counts.items()}
               for kind, counts in work.items()}
    print(f"[two workers] activities started per worker pid: {per_pid['activities']}, workflow tasks: "
          f"{per_pid['workflow_tasks']} (first {first.pid}, second {second.pid}, killed)")
    # a child's rows and RunTasks are local activities: they run inside its workflow tasks
    assert per_pid["workflow_tasks"].get(first.pid, 0) > 0
    assert per_pid["workflow_tasks"].get(second.pid, 0) > 0
    assert set(per_pid["workflow_tasks"]) | set(per_pid["activities"]) <= {first.pid, second.pid}
    phases: dict[str, tuple[float, float]] = {}
    stalls = await recovery_after_kill(await connect(stack.settings), job.job_id, killed_at, phases)
    worst = max(stalls.values(), default=0.0)
    print(f"[two workers] recovery after kill -9: {len(stalls)} workflow or activity task(s) held by "
          f"the killed worker completed on the other {worst:.1f}s after the kill at the latest "
          f"(sticky schedule-to-start {stack.settings.sticky_schedule_to_start_seconds}s, workflow "
          f"task timeout {stack.settings.workflow_task_timeout_seconds}s, activity start-to-close "
          f"{stack.settings.activity_timeout_seconds}s); the slowest: "
          + ", ".join(f"{what.removeprefix(job.job_id)} {seconds:.1f}s"
                      + (" (timed out at {:.1f}s, started again at {:.1f}s)".format(*phases[what])
                         if what in phases else "")
                      for what, seconds in sorted(stalls.items(), key=lambda kv: -kv[1])[:3]))
    assert worst < 30  # a generous bound: the figure is printed, the target is in docs/performance.md


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
                    phases[name] = ((waiting_since - killed_at).total_seconds(),
                                    (restarted - killed_at).total_seconds())
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


@pytest.mark.parametrize("server", ["PostgreSQL", "Temporal dev server"])
async def test_server_restarted_mid_job(
    stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine, server: str
) -> None:
    process = stack.pg if server == "PostgreSQL" else stack.temporal
    job = await Job.submit(api, server[:4].upper())
    await job.wait_progress(JOB_SIZE // 3)
    await asyncio.to_thread(process.stop)
    await asyncio.sleep(2)
    await asyncio.to_thread(process.start)
    result = await job.wait_end(stack)
    assert result["status"] == "READY", result["error"]
    await check_books(stack, db, job, result, f"{server} restart")


async def test_ecs_throttling_errors_and_drops(
    stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine
) -> None:
    assert stack.proxy is not None
    faults = [
        stack.proxy.arm(Fault("RunTask", "throttle", probability=0.20)),
        stack.proxy.arm(Fault("RunTask", "server_error", probability=0.05)),
        stack.proxy.arm(Fault("ListTasks", "drop", probability=0.05)),
        stack.proxy.arm(Fault("DescribeTasks", "throttle", probability=0.10)),
    ]
    job = await Job.submit(api, "THRT")
    result = await job.wait_end(stack)
    injected = [f.injected for f in faults]
    print(f"\n[ECS faults] injected throttle/500/drop/describe-throttle: {injected}")
    assert result["status"] == "READY", result["error"]
    assert injected[0] >= 20  # ~20% of 200+ RunTask calls
    await check_books(stack, db, job, result, "20% ECS throttling + 5xx + drops")


async def test_one_permanent_ecs_error(stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine) -> None:
    assert stack.proxy is not None
    doomed = 57
    job_holder: list[Job] = []
    # arm before submitting: the identity embeds the CPO id, so match on the location's index suffix
    fault = stack.proxy.arm(Fault("RunTask", "invalid_parameter", body_contains=f"-{doomed}\""))
    job = await Job.submit(api, "PERM")
    job_holder.append(job)
    result = await job.wait_end(stack)
    assert fault.injected == 1
    assert result["status"] == "FAILED"
    failed = [loc for loc in result["results"]["locations"] if loc["status"] != "READY"]
    assert [loc["index"] for loc in failed] == [doomed]
    assert failed[0]["error"] == {"code": "ECS_INVALID_PARAMETER", "retryable": False,
                                  "message": failed[0]["error"]["message"]}
    assert result["progress"]["succeeded"] == JOB_SIZE - 1
    await check_books(stack, db, job, result, "one permanent ECS error")


async def test_cancel_a_running_job(stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine) -> None:
    job = await Job.submit(api, "CNCL")
    await job.wait_progress(JOB_SIZE // 4)
    response = await api.delete(job.status_url, headers=job.token)
    assert response.status_code in (200, 202), response.text
    result = await job.wait_end(stack)
    assert result["status"] == "CANCELLED"
    states = {loc["status"] for loc in result["results"]["locations"]}
    assert states <= {"READY", "CANCELLED"}
    ready = sum(loc["status"] == "READY" for loc in result["results"]["locations"])
    assert JOB_SIZE // 4 <= ready < JOB_SIZE
    assert result["progress"] == {"total": JOB_SIZE, "succeeded": ready, "failed": JOB_SIZE - ready,
                                  "in_progress": 0}
    await check_books(stack, db, job, result, "cancel mid-job")


async def test_sigterm_lets_the_worker_go_gracefully(
    stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """SIGTERM: the worker stops polling, lets in-flight activities finish (or hands them back
    within its grace period), and exits 0; the job then completes on the next worker."""
    assert stack.worker is not None and stack.settings is not None
    job = await Job.submit(api, "TERM")
    await job.wait_progress(JOB_SIZE // 3)
    started = time.monotonic()
    stack.worker.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(stack.worker.wait, 60)
    stopped_in = time.monotonic() - started
    print(f"\n[SIGTERM] worker exited {code} after {stopped_in:.1f}s "
          f"(grace {stack.settings.worker_shutdown_grace_seconds}s)")
    assert code == 0, stack.worker_log_tail()
    stack.start_worker()
    result = await job.wait_end(stack)
    assert result["status"] == "READY", result["error"]
    await check_books(stack, db, job, result, "SIGTERM worker")


async def test_sigterm_lets_the_api_finish_in_flight_requests(stack: FaultStack) -> None:
    """uvicorn under SIGTERM stops accepting, but the bulk POST already in flight gets its 202."""
    port = free_port()
    api_proc = stack.start_api(port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(100):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            cpo_id, token = await create_cpo(client, {"Authorization": f"Bearer {ADMIN}"})
            body = {"locations": [
                {"name": f"Term {i}", "address": "Rue de la Loi 16", "city": "Brussels", "country": "BE",
                 "coordinates": {"latitude": 50.8, "longitude": 4.3}, "timezone": "Europe/Brussels"}
                for i in range(10_000)  # a request that takes a moment to validate and store
            ]}

            async def post() -> tuple[httpx.Response, float]:
                response = await client.post(f"/ocpi/cpos/{cpo_id}/locations", json=body, headers=token)
                return response, time.monotonic()

            in_flight = asyncio.create_task(post())
            await asyncio.sleep(0.2)
            signalled = time.monotonic()
            api_proc.send_signal(signal.SIGTERM)
            response, answered = await in_flight
        code = await asyncio.to_thread(api_proc.wait, 60)
    finally:
        if api_proc.poll() is None:
            api_proc.kill()
    print(f"\n[SIGTERM API] POST answered {response.status_code} {answered - signalled:.2f}s after "
          f"SIGTERM; API exited {code}")
    assert answered > signalled  # it really was in flight
    assert response.status_code == 202, response.text
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
