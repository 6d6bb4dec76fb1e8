"""One ECS task per charger: start (or adopt), wait until RUNNING, stop.

moto ignores `clientToken`, so a start that may follow an earlier RunTask of the same deployment
looks for a live task it started (`ListTasks(startedBy=…)`) and adopts it; on real ECS
`clientToken` is a second guard. Which starts may follow one is written in PostgreSQL, not
guessed from the attempt number: the first start moves the deployment PENDING → LAUNCHING before
it sends RunTask, and every later one (a retry, a local activity run again after its worker died,
a `temporal workflow reset`) finds it LAUNCHING and looks first. The first start skips the
look-up: ListTasks scans the whole cluster, so checking on every call made a large job quadratic.

The charger's secret never travels in the RunTask request (anyone with `ecs:DescribeTasks` reads
a task's overrides): the same activity first creates or updates the charger's Secrets Manager
secret (one call per charger, idempotent) and hands the task only its ARN; the charger reads the
value with its task role (deploy/ecs/charger.json, deploy/iam/). Stopping a location's tasks
deletes its secrets too (compensation and decommission both go through `stop_location_tasks`).

Within one start botocore may re-send RunTask (after a throttle, or an answer lost on the way
back, when the first send may have started a task): then the start looks too, and stops any
task of the deployment other than the one answered.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import metrics
from activities.credentials import charger_secret, charger_secret_name
from activities.ecs_client import permanent_or_raise, run_task_failure
from contracts import activities as interfaces
from contracts.payloads import ChargerTaskInput, StopTasksInput, TaskRef, WaitTasksInput
from contracts.vocabulary import DeploymentState, ErrorCode
from db import pipelined
from db.models import ChargerDeployment, EcsTask, utcnow
from settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_ecs import ECSClient
    from types_aiobotocore_ecs.type_defs import TaskTypeDef
    from types_aiobotocore_secretsmanager import SecretsManagerClient


POLL_SECONDS = 1.0
STOPPING_STATES = {"DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED", "DELETED"}


# The two writes of every start, each one statement in a transaction of its own, sent with its
# BEGIN and COMMIT in one round trip (db/pipelined.py): a start's database work was most of the
# worker's activity CPU (profiled: docs/performance.md).

# PENDING → LAUNCHING, only from PENDING, under the deployment's row lock; returns the state found
# (no row: gone). The lock is the fence: a concurrent `stop_location_tasks` that marked STOPPING
# first leaves nothing to claim, and one that comes after finds LAUNCHING.
CLAIM = """
    WITH deployment AS (
        SELECT id, state FROM ocpp.charger_deployments WHERE id = %(deployment_id)s FOR UPDATE
    ), claimed AS (
        UPDATE ocpp.charger_deployments c SET state = %(launching)s, updated_at = %(now)s
        FROM deployment d WHERE c.id = d.id AND d.state = %(pending)s
    )
    SELECT state FROM deployment"""

# The task's row and the deployment STARTING, under the deployment's row lock, unless the
# deployment is being undone (STOPPING) or gone; returns the state found (no row: gone).
RECORD = """
    WITH deployment AS (
        SELECT id, state FROM ocpp.charger_deployments WHERE id = %(deployment_id)s FOR UPDATE
    ), task AS (
        INSERT INTO ocpp.ecs_tasks (task_arn, deployment_id, cluster, task_definition_arn,
                                    last_status, desired_status, started_at, created_at, updated_at)
        SELECT %(task_arn)s, d.id, %(cluster)s, %(task_definition_arn)s, %(last_status)s, %(desired_status)s,
               CAST(%(started_at)s AS timestamptz), %(now)s, %(now)s
        FROM deployment d WHERE d.state <> %(stopping)s
        ON CONFLICT (deployment_id)
        DO UPDATE SET task_arn = EXCLUDED.task_arn, updated_at = EXCLUDED.updated_at
    ), starting AS (
        UPDATE ocpp.charger_deployments c SET state = %(starting)s, updated_at = %(now)s
        FROM deployment d WHERE c.id = d.id AND d.state IN (%(pending)s, %(launching)s)
    )
    SELECT state FROM deployment"""


def _undone(deployment_id: str) -> ApplicationError:
    return ApplicationError(
        f"deployment {deployment_id} is being undone; not starting it",
        type=ErrorCode.CANCELLED.value,
        non_retryable=True,
    )


def tag_value(text: str) -> str:
    """An AWS tag value takes letters, digits, spaces and `_ . : / = + - @` only: a charger
    identity may hold `*` (OCPP allows it), which RunTask would refuse for good."""
    return re.sub(r"[^\w\s.:/=+\-@]", "_", text)[:256]


def secret_request(settings: Settings, inp: ChargerTaskInput) -> dict[str, Any]:
    """CreateSecret's arguments for one charger (the bench's floor sends the very same)."""
    return dict(
        Name=charger_secret_name(settings, inp.deployment_id),
        SecretString=charger_secret(settings.charger_secret_key, inp.deployment_id),
        Description=f"OCPP basic-auth secret of {inp.identity}",
        Tags=[
            {"Key": "ocpplab:deployment-id", "Value": inp.deployment_id},
            {"Key": "ocpplab:location-id", "Value": inp.location_id},
            {"Key": "ocpplab:job-id", "Value": inp.job_id},
        ],
    )


def run_task_request(settings: Settings, inp: ChargerTaskInput, secret_arn: str) -> dict[str, Any]:
    """RunTask's arguments for one charger (the bench's floor sends the very same)."""
    s = settings
    env = [
        {"name": "CHARGER_IDENTITY", "value": inp.identity},
        {"name": "CSMS_URL", "value": s.csms_url},
        {"name": "DEPLOYMENT_ID", "value": inp.deployment_id},
        {"name": "CHARGER_SECRET_ARN", "value": secret_arn},
    ]
    return dict(
        cluster=s.ecs_cluster,
        taskDefinition=s.ecs_task_definition,
        launchType="FARGATE",
        count=1,
        clientToken=inp.deployment_id,
        startedBy=inp.deployment_id,
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": s.ecs_subnets,
                "securityGroups": s.ecs_security_groups,
                "assignPublicIp": "ENABLED" if s.ecs_assign_public_ip else "DISABLED",
            }
        },
        overrides={"containerOverrides": [{"name": s.ecs_container_name, "environment": env}]},
        tags=[
            {"key": "ocpplab:deployment-id", "value": inp.deployment_id},
            {"key": "ocpplab:location-id", "value": inp.location_id},
            {"key": "ocpplab:job-id", "value": inp.job_id},
            {"key": "ocpplab:charger-identity", "value": tag_value(inp.identity)},
        ],
    )


class EcsTaskActivities(interfaces.EcsTasks):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ecs: ECSClient,
        settings: Settings,
        secrets: SecretsManagerClient,
    ) -> None:
        self.sessions = sessions
        self.ecs = ecs
        self.settings = settings
        self.secrets = secrets  # a Secrets Manager client

    async def _live_tasks(self, deployment_id: str) -> list[str]:
        try:
            page = await self.ecs.list_tasks(
                cluster=self.settings.ecs_cluster, startedBy=deployment_id, desiredStatus="RUNNING"
            )
        except ClientError as err:
            raise permanent_or_raise(err) from err
        return list(page.get("taskArns", []))

    async def _claim(self, deployment_id: str) -> bool:
        """Mark the deployment LAUNCHING before RunTask is sent; True when this call is the first
        to get that far. Any later call (a retry, a replay after a crash, a reset) may follow a
        RunTask whose answer was lost, so it must look for that task first. A deployment being
        undone (STOPPING, or its rows gone) is never started again."""
        rows = await pipelined.one_statement(
            self.sessions,
            CLAIM,
            {
                "deployment_id": deployment_id,
                "now": utcnow(),
                "pending": DeploymentState.PENDING.value,
                "launching": DeploymentState.LAUNCHING.value,
            },
        )
        state = rows[0][0] if rows else None
        if state == DeploymentState.PENDING:
            return True
        if state is None or state == DeploymentState.STOPPING:
            raise _undone(deployment_id)
        return False

    @activity.defn
    async def start_charger_task(self, inp: ChargerTaskInput) -> TaskRef:
        """A cancel (the job's, a worker shutting down) lets the start finish first: cut off after
        RunTask was sent, ECS could start the task after the compensation looked for it. As a
        local activity it does see cancels (a regular one without heartbeats does not)."""
        start = asyncio.ensure_future(self._start(inp))
        try:
            return await asyncio.shield(start)
        except asyncio.CancelledError:
            await asyncio.wait([start])
            raise

    async def _start(self, inp: ChargerTaskInput) -> TaskRef:
        first = await self._claim(inp.deployment_id)
        live = [] if first else await self._live_tasks(inp.deployment_id)
        if live:
            task_arn = live[0]
            task: dict[str, Any] = {"taskArn": task_arn, "lastStatus": "ADOPTED"}
            if len(live) > 1:  # never expected; keep exactly one per charger
                activity.logger.warning("deployment %s had %d tasks", inp.deployment_id, len(live))
                for extra in live[1:]:
                    await self._stop(extra, "duplicate task of one deployment")
            await self._record(inp.deployment_id, task)
        else:
            task = await self.run_and_record(inp)
            task_arn = task["taskArn"]
            activity.logger.info("charger %s: task %s started", inp.identity, task_arn)
        return TaskRef(
            deployment_id=inp.deployment_id,
            task_arn=task_arn,
            last_status=str(task.get("lastStatus", "PROVISIONING")),
        )

    async def run_and_record(self, inp: ChargerTaskInput) -> dict[str, Any]:
        """The charger's secret, then its task, then the task's row: what a start does when no
        live task is there to adopt (also the dev stack's restore of moto's forgotten tasks)."""
        secret_arn = await self._put_secret(inp)
        task, resent = await self._run_task(inp, secret_arn)
        if resent:
            await self._stop_others(inp.deployment_id, task["taskArn"])
        await self._record(inp.deployment_id, task)
        return task

    async def _put_secret(self, inp: ChargerTaskInput) -> str:
        """Create the charger's secret, or update it when an earlier attempt created it; its ARN."""
        request = secret_request(self.settings, inp)
        name, value = request["Name"], request["SecretString"]
        try:
            created = await self.secrets.create_secret(**request)
            return str(created["ARN"])
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ResourceExistsException":
                raise permanent_or_raise(err) from err
        try:
            updated = await self.secrets.put_secret_value(SecretId=name, SecretString=value)
        except ClientError as err:
            raise permanent_or_raise(err) from err
        return str(updated["ARN"])

    async def _delete_secret(self, deployment_id: str) -> None:
        """Gone at once (no recovery window: the value is derived, nothing is lost); idempotent."""
        try:
            await self.secrets.delete_secret(
                SecretId=charger_secret_name(self.settings, deployment_id), ForceDeleteWithoutRecovery=True
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise

    async def _run_task(self, inp: ChargerTaskInput, secret_arn: str) -> tuple[dict[str, Any], bool]:
        """The task RunTask started, and whether botocore had to send the call more than once."""
        started = time.monotonic()
        try:
            response = await self.ecs.run_task(**run_task_request(self.settings, inp, secret_arn))
        except ClientError as err:
            metrics.run_task(time.monotonic() - started, "error")
            raise permanent_or_raise(err) from err
        except Exception:
            metrics.run_task(time.monotonic() - started, "error")
            raise
        if response.get("failures"):
            metrics.run_task(time.monotonic() - started, "failures")
            raise run_task_failure(response["failures"])
        metrics.run_task(time.monotonic() - started, "started")
        tasks = response.get("tasks") or []
        if not tasks:
            raise RuntimeError("RunTask returned neither a task nor a failure")
        # botocore re-sent the call (a throttle, or an answer lost on the way back): an earlier
        # send may have started a task too; real ECS dedupes by clientToken, moto does not
        return dict(tasks[0]), bool(response.get("ResponseMetadata", {}).get("RetryAttempts"))

    async def _stop_others(self, deployment_id: str, task_arn: str) -> None:
        """Keep exactly one task for the deployment: the one RunTask answered with."""
        for extra in await self._live_tasks(deployment_id):
            if extra != task_arn:
                activity.logger.warning(
                    "deployment %s: stopping %s, started by a RunTask whose answer was lost",
                    deployment_id,
                    extra,
                )
                await self._stop(extra, "duplicate task of one deployment")

    async def _record(self, deployment_id: str, task: dict[str, Any]) -> None:
        now = utcnow()
        values = dict(
            task_arn=task["taskArn"],
            deployment_id=deployment_id,
            cluster=self.settings.ecs_cluster,
            task_definition_arn=task.get("taskDefinitionArn", self.settings.ecs_task_definition),
            last_status=task.get("lastStatus", "PROVISIONING"),
            desired_status=task.get("desiredStatus", "RUNNING"),
            now=now,
            started_at=(task.get("startedAt") or task.get("createdAt") or now)
            if task.get("lastStatus") == "RUNNING"
            else None,
            stopping=DeploymentState.STOPPING.value,
            starting=DeploymentState.STARTING.value,
            pending=DeploymentState.PENDING.value,
            launching=DeploymentState.LAUNCHING.value,
        )
        # one statement (one round trip): lock the deployment, and unless it is being undone,
        # write the task's row and move the deployment to STARTING
        rows = await pipelined.one_statement(self.sessions, RECORD, values)
        state = rows[0][0] if rows else None
        if state is None or state == DeploymentState.STOPPING:
            # the compensation (or a decommission) got here first and may have looked for tasks
            # (and deleted secrets) before these existed: undo them ourselves
            await self._stop(task["taskArn"], f"deployment {deployment_id} is being undone")
            await self._delete_secret(deployment_id)
            raise _undone(deployment_id)

    @activity.defn
    async def wait_tasks_running(self, inp: WaitTasksInput) -> None:
        """Poll DescribeTasks until every task is RUNNING; a STOPPED task fails the location."""
        arns = [t.task_arn for t in inp.tasks]
        while True:
            described: list[TaskTypeDef] = []
            try:
                for start in range(0, len(arns), 100):
                    page = await self.ecs.describe_tasks(
                        cluster=self.settings.ecs_cluster, tasks=arns[start : start + 100]
                    )
                    described += page.get("tasks", [])
            except ClientError as err:
                raise permanent_or_raise(err) from err
            await self._update_statuses(described)
            by_arn = {t["taskArn"]: t for t in described}
            stopped = [
                t
                for t in described
                if t.get("desiredStatus") == "STOPPED" or t.get("lastStatus") in STOPPING_STATES
            ]
            if stopped:
                reason = stopped[0].get("stoppedReason") or "task stopped"
                raise ApplicationError(
                    f"charger task stopped before running: {reason}",
                    type=ErrorCode.ECS_TASK_STOPPED.value,
                    non_retryable=True,
                )
            missing = [a for a in arns if a not in by_arn]
            if missing:
                raise ApplicationError(
                    f"ECS does not know task {missing[0]}",
                    type=ErrorCode.ECS_TASK_STOPPED.value,
                    non_retryable=True,
                )
            if all(t.get("lastStatus") == "RUNNING" for t in described):
                return
            activity.heartbeat(sum(t.get("lastStatus") == "RUNNING" for t in described))
            await asyncio.sleep(POLL_SECONDS)

    async def _update_statuses(self, described: list[TaskTypeDef]) -> None:
        if not described:
            return
        async with self.sessions() as session, session.begin():
            for task in described:
                await session.execute(
                    update(EcsTask)
                    .where(col(EcsTask.task_arn) == task["taskArn"])
                    .values(
                        last_status=task.get("lastStatus", "UNKNOWN"),
                        desired_status=task.get("desiredStatus", "RUNNING"),
                        started_at=task.get("startedAt") or task.get("createdAt"),
                        updated_at=utcnow(),
                    )
                )

    @activity.defn
    async def stop_location_tasks(self, inp: StopTasksInput) -> int:
        """Stop every task of the location's deployments (recorded ones and any ECS still runs),
        then delete their secrets.

        The deployments are the given ones and those the location's rows list. They are marked
        STOPPING first (a fence): a start still in flight then records its task before this
        reads them, or finds the mark and stops its task itself."""
        async with self.sessions() as session, session.begin():
            marked = (
                (
                    await session.execute(
                        update(ChargerDeployment)
                        .where(
                            or_(
                                col(ChargerDeployment.id).in_(inp.deployment_ids),
                                col(ChargerDeployment.ocpi_location_id) == inp.location_id,
                            )
                        )
                        .values(state=DeploymentState.STOPPING, updated_at=utcnow())
                        .returning(col(ChargerDeployment.id))
                    )
                )
                .scalars()
                .all()
            )
        deployment_ids = sorted(set(inp.deployment_ids) | set(marked))
        async with self.sessions() as session:
            recorded = (
                (
                    await session.execute(
                        select(col(EcsTask.task_arn)).where(col(EcsTask.deployment_id).in_(deployment_ids))
                    )
                )
                .scalars()
                .all()
            )
        arns = set(recorded)
        for deployment_id in deployment_ids:
            arns.update(await self._live_tasks(deployment_id))
        for arn in sorted(arns):
            await self._stop(arn, f"location {inp.location_id} decommissioned")
        now = utcnow()
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(EcsTask)
                .where(col(EcsTask.task_arn).in_(arns))
                .values(desired_status="STOPPED", stopped_at=now, updated_at=now)
            )
        for deployment_id in deployment_ids:  # after the stops: a live task still needs its own
            await self._delete_secret(deployment_id)
        return len(arns)

    async def _stop(self, task_arn: str, reason: str) -> None:
        try:
            await self.ecs.stop_task(cluster=self.settings.ecs_cluster, task=task_arn, reason=reason)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code == "InvalidParameterException":  # already gone: nothing left to stop
                return
            raise
