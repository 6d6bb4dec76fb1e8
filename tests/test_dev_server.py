"""What operators and deploys rely on that the time-skipping test server lacks: visibility queries
(the `ErrorCode` search attribute) and Worker Versioning (a changed workflow version deployed under
a running job). These run on the Temporal dev server of `make run` (in memory), with the suite's
PostgreSQL and moto, workers in this event loop and the real app over ASGI.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import workflow
from temporalio.api.enums.v1 import VersioningBehavior as VersioningBehaviorProto
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.ecs_client import ecs_client, secrets_client
from api.app import create_app
from contracts.payloads import BulkCreateInput, JobOutcome
from contracts.temporal import ERROR_CODES, PRIORITY_BULK, PRIORITY_INTERACTIVE, connect
from db.engine import make_sessionmaker
from devstack.procs import free_port
from devstack.temporal import TemporalDevServer
from settings import Settings
from tests.fault_proxy import Fault, FaultProxy
from tests.helpers import charger, create_cpo, eventually, location, submit, unique, wait_for_job
from tests.suite_stack import asgi_client
from worker.replay import recent_query, replay_recent
from worker.versioning import current_build_id, set_current_version
from worker.workers import WORKFLOWS, build_workers
from workflows.bulk_create import BulkCreateLocations
from workflows.location_changes import updates_workflow_id

if TYPE_CHECKING:
    from types_aiobotocore_ecs import ECSClient


@pytest.fixture(scope="module")
def dev_server() -> Iterator[TemporalDevServer]:
    server = TemporalDevServer(free_port(), None, None)
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def dev_client(dev_server: TemporalDevServer, settings: Settings) -> Client:
    return await connect(settings.model_copy(update={"temporal_address": dev_server.address}))


def own_settings(settings: Settings, dev_server: TemporalDevServer, **update: Any) -> Settings:
    queue = f"dev-{uuid.uuid4().hex[:8]}"
    return settings.model_copy(
        update={
            "temporal_address": dev_server.address,
            "task_queue": f"{queue}-main",
            "ecs_task_queue": f"{queue}-ecs",
            **update,
        }
    )


@asynccontextmanager
async def running(workers: list[Worker]) -> AsyncIterator[None]:
    runs = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    except BaseException:
        for run in runs:  # a worker that could not start is the likelier story
            if run.done() and run.exception() is not None:
                raise run.exception() from None  # type: ignore[misc]
        raise
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*runs, return_exceptions=True)


@asynccontextmanager
async def app_on(settings: Settings, client: Client) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, temporal_client=client)
    async with asgi_client(app, "http://gateway.test") as http:
        yield http


async def test_failed_location_error_code_is_a_search_attribute(
    dev_server: TemporalDevServer,
    dev_client: Client,
    settings: Settings,
    engine: AsyncEngine,
    fault_proxy: FaultProxy,
    admin: dict[str, str],
) -> None:
    """A job with a failed location carries the location's error code in `ErrorCode`, so a
    visibility query (the runbook's, docs/operations.md) finds it; a READY job of the same CPO does not. And
    the priority keys: bulk for the jobs and their children, interactive for a PATCH."""
    own = own_settings(settings, dev_server, worker_versioning=False)
    sessions = make_sessionmaker(engine)
    async with (
        ecs_client(own) as ecs,
        secrets_client(own) as sm,
        running(build_workers(dev_client, own, sessions, ecs, sm)),
        app_on(own, dev_client) as http,
    ):
        cpo_id, token = await create_cpo(http, admin)
        denied = unique(f"SA-{cpo_id}-DENIED")
        fault_proxy.arm(Fault("RunTask", "access_denied", body_contains=denied))
        failed = await submit(
            http, cpo_id, token, [location("SA 0", [charger(denied)]), location("SA 1", [])]
        )
        ready = await submit(http, cpo_id, token, [location("SA 2", [])])
        assert (await wait_for_job(http, failed["status_url"], token, timeout=60))["status"] == "FAILED"
        done = await wait_for_job(http, ready["status_url"], token)
        assert done["status"] == "READY"
        # a PATCH runs at the interactive priority, ahead of bulk provisioning; same fairness key
        location_id = done["results"]["locations"][0]["location_id"]
        patched = await http.patch(
            f"/ocpi/cpos/{cpo_id}/locations/{location_id}", json={"name": "SA 2b"}, headers=token
        )
        assert patched.status_code == 200, patched.text

    query = f'CpoId = "{cpo_id}" AND ErrorCode = "ECS_ACCESS_DENIED"'
    found: list[str] = []
    for _ in range(50):  # visibility is eventually consistent
        found = [w.id async for w in dev_client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.2)
    assert found == [failed["job_id"]]
    every = {w.id: w for w in [w async for w in dev_client.list_workflows(f'CpoId = "{cpo_id}"')]}
    assert set(every) == {failed["job_id"], ready["job_id"]}
    assert every[failed["job_id"]].typed_search_attributes.get(ERROR_CODES) == ["ECS_ACCESS_DENIED"]
    assert every[ready["job_id"]].typed_search_attributes.get(ERROR_CODES) is None

    # priority key and fairness key (the CPO): set on the job and the PATCH, inherited by a child
    async def priority(workflow_id: str) -> tuple[int, str]:
        described = (await dev_client.get_workflow_handle(workflow_id).describe()).raw_description
        given = described.workflow_execution_info.priority
        return given.priority_key, given.fairness_key

    update = [
        w.id
        async for w in dev_client.list_workflows(
            f'WorkflowType = "LocationUpdates" AND WorkflowId = "{updates_workflow_id(location_id)}"'
        )
    ]
    assert len(update) == 1
    assert await priority(failed["job_id"]) == (PRIORITY_BULK, f"cpo-{cpo_id}")
    assert await priority(f"{failed['job_id']}/location-0") == (PRIORITY_BULK, f"cpo-{cpo_id}")
    assert await priority(update[0]) == (PRIORITY_INTERACTIVE, f"cpo-{cpo_id}")

    # `make replay`: the histories on the server replay against this code
    report = await replay_recent(dev_client, recent_query(hours=1), limit=100)
    assert report.failures == []
    assert report.replayed >= 5  # the two jobs and their three children at least


# --- Worker Versioning -------------------------------------------------------------------------


@workflow.defn(name="BulkCreateLocations")
class BulkCreateLocationsB(BulkCreateLocations):
    """Version B of the job: the same, plus a visible change in its current details."""

    def _show(self) -> None:
        super()._show()
        workflow.set_current_details(f"{workflow.get_current_details()}\n\nbuilt by version B")

    @workflow.run
    async def run(self, inp: BulkCreateInput) -> JobOutcome:
        return await super().run(inp)


class GatedEcs:
    """The ECS client of version A's workers: RunTask waits until the test opens the gate, so
    version A's children are still running when version B becomes current."""

    def __init__(self, ecs: Any, gate: asyncio.Event) -> None:
        self._ecs, self._gate, self.calls = ecs, gate, 0

    async def run_task(self, **kwargs: Any) -> Any:
        self.calls += 1
        await self._gate.wait()
        return await self._ecs.run_task(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ecs, name)


async def build_of(handle: WorkflowHandle[Any, Any]) -> tuple[str, str]:
    """(build id, behavior) that the server records for a run."""
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    return info.deployment_version.build_id, VersioningBehaviorProto.Name(info.behavior)


async def test_deploy_a_new_version_under_a_running_job(
    dev_server: TemporalDevServer,
    dev_client: Client,
    settings: Settings,
    engine: AsyncEngine,
    admin: dict[str, str],
) -> None:
    """Version A runs a 4-location job (window 2, continue-as-new every 2 children) whose first
    two children are held in RunTask; version B (a changed job workflow) starts and becomes
    current. A's running children stay pinned to A and finish there; the job's next run, after
    continue-as-new, runs on B and starts its children there; the job ends READY."""
    deployment = f"ocpplab-test-{uuid.uuid4().hex[:8]}"
    own = own_settings(
        settings,
        dev_server,
        worker_versioning=True,
        worker_deployment_name=deployment,
        child_window=2,
        children_per_run=2,
    )
    version_a = own.model_copy(update={"worker_build_id": "A"})
    version_b = own.model_copy(update={"worker_build_id": "B"})
    sessions = make_sessionmaker(engine)
    gate = asyncio.Event()
    async with ecs_client(own) as ecs, secrets_client(own) as sm, app_on(own, dev_client) as http:
        gated = GatedEcs(ecs, gate)
        async with running(build_workers(dev_client, version_a, sessions, cast("ECSClient", gated), sm)):
            await set_current_version(dev_client, deployment, "A")
            cpo_id, token = await create_cpo(http, admin)
            accepted = await submit(
                http,
                cpo_id,
                token,
                [location(f"Deploy {i}", [charger(unique(f"DEPLOY-{cpo_id}-{i}"))]) for i in range(4)],
            )
            job = dev_client.get_workflow_handle(accepted["job_id"], run_id=accepted["workflow_run_id"])
            children = [
                dev_client.get_workflow_handle(f"{accepted['job_id']}/location-{i}") for i in range(4)
            ]

            async def both_held() -> bool:
                return gated.calls >= 2

            await eventually(both_held, "version A's two children in RunTask", timeout=30, every=0.2)

            version_b_workflows = [
                BulkCreateLocationsB,
                *(w for w in WORKFLOWS if w is not BulkCreateLocations),
            ]
            # unsandboxed: the sandbox would re-import this test module for version B's job
            workers_b = build_workers(
                dev_client,
                version_b,
                sessions,
                ecs,
                sm,
                workflows=version_b_workflows,
                runner=UnsandboxedWorkflowRunner(),
            )
            async with running(workers_b):
                await set_current_version(dev_client, deployment, "B")
                assert await current_build_id(dev_client, deployment) == "B"
                # B is current, but the running job and its children stay pinned to A
                assert await build_of(job) == ("A", "VERSIONING_BEHAVIOR_PINNED")
                for child in children[:2]:
                    assert await build_of(child) == ("A", "VERSIONING_BEHAVIOR_PINNED")
                gate.set()
                result = await wait_for_job(http, accepted["status_url"], token, timeout=60)
                assert result["status"] == "READY", result["error"]
                for child in children[:2]:
                    assert (await build_of(child))[0] == "A"
                for child in children[2:]:
                    assert (await build_of(child))[0] == "B"
                last_run = dev_client.get_workflow_handle(accepted["job_id"])
                assert (await build_of(last_run))[0] == "B"
                details = await last_run.query("__temporal_workflow_metadata")
                assert "built by version B" in details.current_details
                assert gated.calls == 2  # B's children never went through A's workers
