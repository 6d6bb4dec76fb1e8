"""Worker Versioning: the deployment version a worker polls as, and how it becomes current.

Every workflow of a versioned worker is pinned by default: it runs to its end on the build that
started it, so a deploy never replays a running workflow against changed code. The one
long-lived workflow, the job (BulkCreateLocations), moves to the deployment's current version at
each continue-as-new (`initial_versioning_behavior=AUTO_UPGRADE`), with a drained window: its
children stay on the build that started them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time

from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError
from temporalio.worker import WorkerDeploymentConfig

from settings import ROOT, Settings

log = logging.getLogger("worker.versioning")

# What decides how a workflow replays: the workflow code and the payloads it carries.
CODE_FOLDERS = ("workflows", "contracts")


def derived_build_id() -> str:
    """A build id from the workflow code itself: the same code gives the same id on every
    worker and every restart; a change to it gives a new version."""
    digest = hashlib.sha256()
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"code-{digest.hexdigest()[:12]}"


def build_id(settings: Settings) -> str:
    return settings.worker_build_id or derived_build_id()


def deployment_version(settings: Settings) -> WorkerDeploymentVersion:
    return WorkerDeploymentVersion(
        deployment_name=settings.worker_deployment_name, build_id=build_id(settings)
    )


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """None: an unversioned worker (WORKER_VERSIONING=false; the time-skipping test server)."""
    if not settings.worker_versioning:
        return None
    return WorkerDeploymentConfig(
        version=deployment_version(settings),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


async def current_build_id(client: Client, deployment_name: str) -> str | None:
    """The deployment's current build id; None when it has none (or does not exist yet)."""
    try:
        response = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment_name)
        )
    except RPCError:
        return None
    current = response.worker_deployment_info.routing_config.current_deployment_version
    return current.build_id or None


async def set_current_version(
    client: Client, deployment_name: str, build: str, timeout: float = 60.0
) -> None:
    """Make `build` the current version of the deployment: new workflows start on it and jobs
    move to it at their next continue-as-new. The server knows a version once one of its
    workers has polled, so this retries until then."""
    deadline = time.monotonic() + timeout
    while True:
        if await current_build_id(client, deployment_name) == build:
            return
        try:
            await client.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace=client.namespace,
                    deployment_name=deployment_name,
                    build_id=build,
                    identity=f"{os.getpid()}@ocpplab-worker",
                )
            )
            log.info("worker deployment %s: current version is now %s", deployment_name, build)
            return
        except RPCError as err:
            if time.monotonic() > deadline:
                raise
            log.debug("version %s of %s not ready to be current yet: %s", build, deployment_name, err)
            await asyncio.sleep(0.5)
