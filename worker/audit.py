"""`python -m worker.audit --cpo ID | --job JOB_ID`: does the database agree with ECS?

It reports, as numbers: locations per state (REMOVED ones keep only their OCPI rows, for the
eMSPs); deployments of active locations without a running task; running charger tasks whose
deployment is unknown (orphans); charger secrets whose deployment is unknown (orphan secrets: a
compensation or decommission that did not delete them); deployments with more than one running
task (duplicates); locations missing some of their ten tables' rows (half-written); and READY job
locations whose location is gone (lost). Exit code 1 when any of the last six is not 0.
The fault tests use it as their oracle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from activities.ecs_client import ecs_client, secrets_client
from contracts.vocabulary import JobStatus, LocationStatus
from db.engine import make_engine
from db.location_shape import location_shapes_sql
from settings import Settings, get_settings


@dataclass
class AuditReport:
    scope: str
    locations_by_state: dict[str, int] = field(default_factory=dict)
    chargers: int = 0
    running_tasks: int = 0
    deployments_without_task: int = 0
    orphan_tasks: int = 0
    orphan_secrets: int = 0
    duplicate_tasks: int = 0
    half_written_locations: int = 0
    lost_locations: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.deployments_without_task
            or self.orphan_tasks
            or self.orphan_secrets
            or self.duplicate_tasks
            or self.half_written_locations
            or self.lost_locations
        )


def _half_written(row: Any) -> bool:
    if row.status == LocationStatus.REMOVED:  # OCPI rows kept for the eMSPs; the OCPP side is gone
        ocpp_side = (
            row.locations,
            row.charge_points,
            row.charge_point_connectors,
            row.charge_point_credentials,
            row.network_topology,
            row.charger_deployments,
            row.ecs_tasks,
        )
        return any(ocpp_side) or row.ocpi_evses != row.ocpi_connectors
    whole_site = row.locations == 1
    evse_side = row.ocpi_evses == row.ocpi_connectors == row.charge_point_connectors == row.network_topology
    charger_side = row.charge_points == row.charge_point_credentials == row.charger_deployments
    tasks = row.status != LocationStatus.ACTIVE or row.ecs_tasks == row.charger_deployments
    return not (whole_site and evse_side and charger_side and tasks)


async def running_charger_tasks(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """RUNNING tasks of the cluster started by a deployment, by deployment id, with their tags."""
    by_deployment: dict[str, list[dict[str, Any]]] = {}
    async with ecs_client(settings) as ecs:
        arns: list[str] = []
        paginator = ecs.get_paginator("list_tasks")
        async for page in paginator.paginate(cluster=settings.ecs_cluster, desiredStatus="RUNNING"):
            arns += page.get("taskArns", [])
        for start in range(0, len(arns), 100):
            described = await ecs.describe_tasks(
                cluster=settings.ecs_cluster, tasks=arns[start : start + 100], include=["TAGS"]
            )
            for task in described.get("tasks", []):
                started_by = task.get("startedBy", "")
                if started_by.startswith("dep-"):
                    by_deployment.setdefault(started_by, []).append(dict(task))
    return by_deployment


async def _charger_secret_jobs(settings: Settings) -> dict[str, str]:
    """Every charger secret (by its name's prefix): deployment id -> its job id tag. One
    ListSecrets page per 100 chargers."""
    found: dict[str, str] = {}
    async with secrets_client(settings) as sm:
        paginator = sm.get_paginator("list_secrets")
        pages = paginator.paginate(
            Filters=[{"Key": "name", "Values": [settings.charger_secret_prefix]}],
            PaginationConfig={"PageSize": 100},
        )
        async for page in pages:
            for secret in page.get("SecretList", []):
                name = str(secret.get("Name", ""))
                if name.startswith(settings.charger_secret_prefix):
                    tags = {t["Key"]: t["Value"] for t in secret.get("Tags", [])}
                    found[name.removeprefix(settings.charger_secret_prefix)] = tags.get("ocpplab:job-id", "")
    return found


async def audit(
    settings: Settings, engine: AsyncEngine, *, cpo_id: int | None = None, job_id: str | None = None
) -> AuditReport:
    if (cpo_id is None) == (job_id is None):
        raise ValueError("audit one CPO or one job")
    params: dict[str, Any]
    jobs_params: dict[str, Any]
    if job_id is not None:
        scope, params = "l.job_id = :job", {"job": job_id}
        jobs_sql, jobs_params = "SELECT :job", {"job": job_id}
        report = AuditReport(scope=f"job {job_id}")
    else:
        scope, params = "l.network_id = :cpo", {"cpo": cpo_id}
        jobs_sql, jobs_params = "SELECT id FROM ocpp.jobs WHERE cpo_id = :cpo", {"cpo": cpo_id}
        report = AuditReport(scope=f"CPO {cpo_id}")
    async with engine.connect() as conn:
        shapes = (await conn.execute(text(location_shapes_sql(scope)), params)).all()
        deployments = (
            await conn.execute(
                text(
                    "SELECT d.id, l.status FROM ocpp.charger_deployments d JOIN ocpp.ocpi_locations l"
                    f" ON l.id = d.ocpi_location_id WHERE {scope}"
                ),
                params,
            )
        ).all()
        job_ids = set((await conn.execute(text(jobs_sql), jobs_params)).scalars())
        known = set((await conn.execute(text("SELECT id FROM ocpp.charger_deployments"))).scalars())
        lost = (
            (
                await conn.execute(
                    text(
                        "SELECT j.job_id || '#' || j.index FROM ocpp.job_locations j"
                        " LEFT JOIN ocpp.ocpi_locations l ON l.id = j.location_id"
                        f" WHERE j.job_id IN ({jobs_sql}) AND j.state = :ready AND l.id IS NULL"
                    ),
                    jobs_params | {"ready": JobStatus.READY.value},
                )
            )
            .scalars()
            .all()
        )
    report.locations_by_state = dict(Counter(row.status for row in shapes))
    half = [row.id for row in shapes if _half_written(row)]
    report.half_written_locations = len(half)
    report.lost_locations = len(lost)
    report.chargers = len(deployments)

    running = await running_charger_tasks(settings)
    in_scope = {
        dep: tasks
        for dep, tasks in running.items()
        if any(
            t["key"] == "ocpplab:job-id" and t["value"] in job_ids
            for task in tasks
            for t in task.get("tags", [])
        )
    }
    report.running_tasks = sum(len(tasks) for tasks in in_scope.values())
    missing = [dep for dep, status in deployments if status == LocationStatus.ACTIVE and dep not in running]
    orphans = [dep for dep in in_scope if dep not in known]
    duplicates = [dep for dep, tasks in in_scope.items() if len(tasks) > 1]
    report.deployments_without_task = len(missing)
    report.orphan_tasks = sum(len(in_scope[dep]) for dep in orphans)
    report.duplicate_tasks = len(duplicates)
    secrets = await _charger_secret_jobs(settings)
    orphan_secrets = [dep for dep, job in secrets.items() if job in job_ids and dep not in known]
    report.orphan_secrets = len(orphan_secrets)
    report.examples = (
        [f"half-written {i}" for i in half[:3]]
        + [f"lost {i}" for i in lost[:3]]
        + [f"no task {d}" for d in missing[:3]]
        + [f"orphan {d}" for d in orphans[:3]]
        + [f"duplicate {d}" for d in duplicates[:3]]
        + [f"orphan secret {d}" for d in orphan_secrets[:3]]
    )
    return report


def render(report: AuditReport) -> str:
    lines = [f"audit of {report.scope}"]
    states = ", ".join(f"{k} {v}" for k, v in sorted(report.locations_by_state.items())) or "none"
    lines.append(f"  locations by state         {states}")
    for name in (
        "chargers",
        "running_tasks",
        "deployments_without_task",
        "orphan_tasks",
        "orphan_secrets",
        "duplicate_tasks",
        "half_written_locations",
        "lost_locations",
    ):
        lines.append(f"  {name.replace('_', ' '):<26} {getattr(report, name)}")
    lines += [f"  e.g. {example}" for example in report.examples]
    lines.append("  OK" if report.ok else "  MISMATCH")
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    settings = get_settings()
    engine = make_engine(settings)
    try:
        report = await audit(settings, engine, cpo_id=args.cpo, job_id=args.job)
    finally:
        await engine.dispose()
    print(json.dumps(asdict(report) | {"ok": report.ok}) if args.json else render(report))
    return 0 if report.ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.audit", description=__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--cpo", type=int, help="audit every location of this CPO")
    target.add_argument("--job", help="audit the locations of this job")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    sys.exit(asyncio.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
