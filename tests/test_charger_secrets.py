"""A charger's secret never travels in the RunTask request: it lives in Secrets Manager (one secret
per charger, which the task reads with its task role), and leaves with the charger. deploy/ pins
our images by digest."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.worker import Worker

from activities.credentials import charger_secret, charger_secret_name
from contracts import ids
from settings import ROOT, Settings
from tests.fault_proxy import Fault, FaultProxy
from tests.helpers import charger, create_cpo, location, running_tasks, submit, unique, wait_for_job
from worker.audit import audit, render


@pytest.fixture(scope="module")
def secretsmanager(moto: dict[str, Any]) -> Iterator[Any]:
    """Straight to moto: the test's view of the secrets that really exist."""
    yield boto3.client(
        "secretsmanager",
        region_name="eu-west-1",
        endpoint_url=moto["endpoint"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def secret_value(sm: Any, settings: Settings, deployment_id: str) -> str | None:
    try:
        found = sm.get_secret_value(SecretId=charger_secret_name(settings, deployment_id))
    except ClientError as err:
        if err.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise
    return str(found["SecretString"])


async def test_the_secret_is_never_in_the_task_and_leaves_with_the_location(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    ecs: Any,
    settings: Settings,
    secretsmanager: Any,
    engine: AsyncEngine,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    accepted = await submit(
        app_client,
        cpo_id,
        token,
        [
            location("Secretive", [charger(unique("SEC")), charger(unique("SEC"), evses=2)]),
        ],
    )
    job = await wait_for_job(app_client, accepted["status_url"], token)
    assert job["status"] == "READY", job
    (loc,) = job["results"]["locations"]

    for dep_id in loc["charger_ids"]:
        password = charger_secret(settings.charger_secret_key, dep_id)
        (task,) = running_tasks(ecs, settings.ecs_cluster, dep_id)
        # what anyone with ecs:DescribeTasks reads: nothing holds the password, in any form
        assert password not in json.dumps(task, default=str)
        overrides = task["overrides"]["containerOverrides"]
        env = {e["name"]: e["value"] for o in overrides for e in o.get("environment", [])}
        # the task gets the secret's ARN; its task role reads the value
        described = secretsmanager.describe_secret(SecretId=charger_secret_name(settings, dep_id))
        assert env["CHARGER_SECRET_ARN"] == described["ARN"]
        assert secret_value(secretsmanager, settings, dep_id) == password

    url = f"/ocpi/cpos/{cpo_id}/locations/{loc['location_id']}"
    assert (await app_client.delete(url, headers=token)).status_code == 204
    for dep_id in loc["charger_ids"]:
        assert secret_value(secretsmanager, settings, dep_id) is None
    # a second DELETE finds nothing to delete, and says so without an error
    assert (await app_client.delete(url, headers=token)).status_code == 204
    report = await audit(settings, engine, cpo_id=int(cpo_id))
    assert report.ok and report.orphan_secrets == 0, render(report)

    # the audit finds a secret left behind by a deployment that is gone
    stray = charger_secret_name(settings, loc["charger_ids"][0])
    secretsmanager.create_secret(
        Name=stray, SecretString="left behind", Tags=[{"Key": "ocpplab:job-id", "Value": accepted["job_id"]}]
    )
    try:
        report = await audit(settings, engine, cpo_id=int(cpo_id))
        assert (report.ok, report.orphan_secrets) == (False, 1), render(report)
    finally:
        secretsmanager.delete_secret(SecretId=stray, ForceDeleteWithoutRecovery=True)


async def test_a_compensated_location_leaves_no_secret(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    ecs: Any,
    settings: Settings,
    secretsmanager: Any,
    fault_proxy: FaultProxy,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    bad = f"SECBAD-{cpo_id}"
    fault_proxy.arm(Fault("RunTask", "invalid_parameter", body_contains=bad))
    accepted = await submit(
        app_client,
        cpo_id,
        token,
        [
            location("Doomed secrets", [charger(unique("SECOK")), charger(bad)]),
        ],
    )
    job = await wait_for_job(app_client, accepted["status_url"], token)
    assert job["status"] == "FAILED", job
    for n in range(2):
        dep_id = ids.deployment_id(accepted["job_id"], 0, n)
        assert running_tasks(ecs, settings.ecs_cluster, dep_id) == []
        assert secret_value(secretsmanager, settings, dep_id) is None


# --- images pinned by digest -----------------------------------------------------------------

# a digest, or the slot the release fills with one (as it fills ACCOUNT_ID and REGION)
DIGEST = re.compile(r"@sha256:([0-9a-f]{64}|[A-Z_]+_IMAGE_DIGEST)$")
OURS = ("ocpplab",)  # images we build and release (ECR's ocpplab-gateway, the charger simulator)


def deploy_images() -> list[tuple[str, str]]:
    """(file, image) of every image named in deploy/: ECS task definitions (and an image that a
    container's environment names, CHARGER_IMAGE), the compose file, the Dockerfile."""
    found: list[tuple[str, str]] = []
    for path in sorted((ROOT / "deploy").rglob("*")):
        if path.suffix == ".json" and "ecs" in path.parts:
            for container in json.loads(path.read_text()).get("containerDefinitions", []):
                found.append((str(path.relative_to(ROOT)), container["image"]))
                found += [
                    (str(path.relative_to(ROOT)), env["value"])
                    for env in container.get("environment", [])
                    if env["name"].endswith("_IMAGE")
                ]
        elif path.name in ("compose.yaml", "Dockerfile"):
            for match in re.finditer(r"^\s*(?:image:|FROM)\s+(\S+)", path.read_text(), re.MULTILINE):
                found.append((str(path.relative_to(ROOT)), match.group(1)))
    return found


def test_our_images_are_pinned_by_digest() -> None:
    images = deploy_images()
    ours = [(f, image) for f, image in images if any(name in image for name in OURS)]
    named = {f for f, _ in ours}
    assert named >= {"deploy/ecs/api.json", "deploy/ecs/worker.json", "deploy/ecs/charger.json"}
    for where, image in images:
        assert not image.endswith(":latest") and ":latest@" not in image, (where, image)
    unpinned = [(where, image) for where, image in ours if not DIGEST.search(image)]
    assert unpinned == [], "our images must be pinned as image@sha256:<digest>"
    assert ("deploy/ecs/worker.json", "ghcr.io/ocpplab/charger-simulator@sha256:CHARGER_IMAGE_DIGEST") in ours


def test_the_digest_check_rejects_tags() -> None:
    """The rule itself: a tag alone, or :latest, is not a pin."""
    for image in (
        "ghcr.io/ocpplab/charger-simulator:latest",
        "ghcr.io/ocpplab/charger-simulator:1.4",
        "ACCOUNT_ID.dkr.ecr.REGION.amazonaws.com/ocpplab-gateway:VERSION",
        "ghcr.io/ocpplab/charger-simulator@sha256:latest",
    ):
        assert not DIGEST.search(image)
    assert DIGEST.search("ghcr.io/ocpplab/charger-simulator:1.4@sha256:" + "ab" * 32)
