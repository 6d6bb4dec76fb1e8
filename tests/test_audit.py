"""The audit agrees with a healthy job, and catches each kind of damage done behind its back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.worker import Worker

from settings import ROOT, Settings
from tests.helpers import charger, create_cpo, location, submit, unique, wait_for_job
from worker.audit import audit, render


async def test_audit_counts_a_healthy_job_then_finds_the_damage(
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    ecs: Any,
    settings: Settings,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    accepted = await submit(
        app_client,
        cpo_id,
        token,
        [
            location("Audited A", [charger(unique("AUD")), charger(unique("AUD"), evses=2)]),
            location("Audited B", [charger(unique("AUD"))]),
            location("Audited C", []),
        ],
    )
    job = await wait_for_job(app_client, accepted["status_url"], token)
    assert job["status"] == "READY"

    healthy = await audit(settings, engine, cpo_id=int(cpo_id))
    assert healthy.ok, render(healthy)
    assert healthy.locations_by_state == {"ACTIVE": 3}
    assert (healthy.chargers, healthy.running_tasks) == (3, 3)
    assert (await audit(settings, engine, job_id=accepted["job_id"])).ok

    a, b, _ = job["results"]["locations"]
    network = {
        "awsvpcConfiguration": {
            "subnets": settings.ecs_subnets,
            "securityGroups": settings.ecs_security_groups,
        }
    }

    def run_task(started_by: str) -> None:
        ecs.run_task(
            cluster=settings.ecs_cluster,
            taskDefinition=settings.ecs_task_definition,
            launchType="FARGATE",
            startedBy=started_by,
            networkConfiguration=network,
            tags=[{"key": "ocpplab:job-id", "value": accepted["job_id"]}],
        )

    run_task(a["charger_ids"][0])  # a second task for one charger
    run_task("dep-" + "0" * 32)  # a task no deployment knows
    ecs.stop_task(
        cluster=settings.ecs_cluster,
        reason="audit test",  # a charger with no task
        task=ecs.list_tasks(
            cluster=settings.ecs_cluster, startedBy=b["charger_ids"][0], desiredStatus="RUNNING"
        )["taskArns"][0],
    )
    async with engine.begin() as conn:  # a location missing one of its rows
        await conn.execute(
            text(
                "DELETE FROM ocpp.charge_point_credentials WHERE charge_point_id IN (SELECT charge_point_id"
                " FROM ocpp.charger_deployments WHERE id = :d)"
            ),
            {"d": a["charger_ids"][1]},
        )

    damaged = await audit(settings, engine, cpo_id=int(cpo_id))
    assert not damaged.ok
    assert (
        damaged.duplicate_tasks,
        damaged.orphan_tasks,
        damaged.deployments_without_task,
        damaged.half_written_locations,
        damaged.lost_locations,
    ) == (1, 1, 1, 1, 0)

    # the command line says the same and exits non-zero
    env = {
        "DATABASE_URL": settings.database_url,
        "AWS_ENDPOINT_URL": str(settings.aws_endpoint_url),
        "AWS_REGION": settings.aws_region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "ECS_CLUSTER": settings.ecs_cluster,
        "PATH": "/usr/bin:/bin",
    }
    command = [sys.executable, "-m", "worker.audit", "--cpo", cpo_id]
    result = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "duplicate tasks            1" in result.stdout
    assert "MISMATCH" in result.stdout
