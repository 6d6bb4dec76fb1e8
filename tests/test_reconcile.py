"""The job reconciler repairs jobs left PROVISIONING with no workflow to end them: a job whose
workflow never started (the API killed between its commit and the start, or a start that timed
out) is started and reaches READY; a job whose workflow was terminated ends FAILED with
JOB_INTERRUPTED; a completed workflow's outcome is written if the row missed it."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.app import create_app
from api.bulk_jobs import create_or_reuse_job
from api.schemas import BulkCreateRequest
from contracts.job_start import job_tuning
from contracts.payloads import BulkCreateInput, ReconcileInput, ReconcileReport
from contracts.vocabulary import ERRORS, ErrorCode
from db.engine import make_sessionmaker
from settings import Settings
from tests.helpers import charger, create_cpo, location, submit, unique, wait_for_job
from tests.suite_stack import asgi_client
from workflows.reconcile import ReconcileJobs


async def reconcile(temporal: WorkflowEnvironment, settings: Settings) -> ReconcileReport:
    """One run of what the Schedule runs (the time-skipping test server has no Schedules)."""
    return await temporal.client.execute_workflow(
        ReconcileJobs.run,
        ReconcileInput(grace_seconds=0),
        id=f"reconcile-{uuid.uuid4().hex}",
        task_queue=settings.task_queue,
    )


async def fresh_status(app_with: Any, url: str, token: dict[str, str]) -> dict[str, Any]:
    """The status as the database has it now (the suite's app remembers a poll's answer briefly)."""
    async with app_with(status_cache_seconds=0) as api:
        response = await api.get(url, headers=token)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_job_committed_without_its_workflow_is_started_to_ready(
    app_with: Any,
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    temporal: WorkflowEnvironment,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    body = BulkCreateRequest.model_validate(
        {
            "locations": [
                location("Never started", [charger(unique("REC"))]),
                location("Never started either", []),
            ]
        }
    )
    # what the API commits before it starts the workflow; then it "dies": no start
    async with make_sessionmaker(engine)() as session:
        job, created = await create_or_reuse_job(session, int(cpo_id), body, None)
    assert created
    status_url = f"/ocpi/cpos/{cpo_id}/locations/jobs/{job.id}"
    assert (await fresh_status(app_with, status_url, token))["status"] == "PROVISIONING"

    report = await reconcile(temporal, settings)
    assert report.started >= 1, report
    done = await wait_for_job(app_client, status_url, token)
    assert done["status"] == "READY", done
    assert done["progress"]["succeeded"] == 2
    assert done["workflow_run_id"]
    assert (await reconcile(temporal, settings)).started == 0  # nothing left to start
    # started as the API starts a job: the same input, settings included
    history = await temporal.client.get_workflow_handle(job.id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [sent] = await temporal.client.data_converter.decode(started.input.payloads, [BulkCreateInput])
    assert sent == BulkCreateInput(job_id=job.id, cpo_id=int(cpo_id), total=2, tuning=job_tuning(settings))


async def test_a_start_that_timed_out_is_accepted_and_the_reconciler_starts_it(
    admin: dict[str, str],
    app_client: httpx.AsyncClient,
    workers: list[Worker],
    temporal: WorkflowEnvironment,
    settings: Settings,
) -> None:
    """DEADLINE_EXCEEDED on the start: it may have reached Temporal, so the job is kept (202)."""

    class TimingOut:
        def __init__(self, real: Client) -> None:
            self.real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        async def start_workflow(self, *args: Any, **kwargs: Any) -> Any:
            raise RPCError("context deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b"")

    cpo_id, token = await create_cpo(app_client, admin)
    app = create_app(settings, temporal_client=TimingOut(temporal.client))  # type: ignore[arg-type]
    async with asgi_client(app, "http://t") as client:
        accepted = await submit(client, cpo_id, token, [location("Slow start", [charger(unique("RECD"))])])
    assert accepted["workflow_run_id"] is None
    assert (await reconcile(temporal, settings)).started >= 1
    done = await wait_for_job(app_client, accepted["status_url"], token)
    assert done["status"] == "READY", done


async def test_a_terminated_job_ends_failed_with_a_code_that_says_so(
    app_with: Any,
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    temporal: WorkflowEnvironment,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    async with app_with(task_queue="reconcile-nobody-polls") as client:
        cpo_id, token = await create_cpo(client, admin)
        accepted = await submit(
            client,
            cpo_id,
            token,
            [
                location("Stopped by hand", [charger(unique("RECT"))]),
                location("Never reached", []),
            ],
        )
    await temporal.client.get_workflow_handle(accepted["job_id"]).terminate("an operator's terminate")
    stuck = (await app_client.get(accepted["status_url"], headers=token)).json()
    assert stuck["status"] == "PROVISIONING"

    report = await reconcile(temporal, settings)
    assert report.failed >= 1, report
    job = await fresh_status(app_with, accepted["status_url"], token)
    assert job["status"] == "FAILED"
    message = ERRORS[ErrorCode.JOB_INTERRUPTED].message
    assert job["error"] == {"code": "JOB_INTERRUPTED", "message": message, "retryable": True}
    assert job["progress"] == {"total": 2, "succeeded": 0, "failed": 2, "in_progress": 0}
    assert [loc["error"]["code"] for loc in job["results"]["locations"]] == ["JOB_INTERRUPTED"] * 2
    async with engine.connect() as conn:
        states = (
            (
                await conn.execute(
                    text("SELECT state FROM ocpp.job_locations WHERE job_id = :j"), {"j": accepted["job_id"]}
                )
            )
            .scalars()
            .all()
        )
    assert sorted(states) == ["FAILED", "FAILED"]


async def test_a_completed_workflow_whose_end_the_row_missed_is_written(
    app_with: Any,
    app_client: httpx.AsyncClient,
    admin: dict[str, str],
    workers: list[Worker],
    temporal: WorkflowEnvironment,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    cpo_id, token = await create_cpo(app_client, admin)
    accepted = await submit(app_client, cpo_id, token, [location("Done", [])])
    assert (await wait_for_job(app_client, accepted["status_url"], token))["status"] == "READY"
    async with engine.begin() as conn:  # as if its last activity's write had been lost
        await conn.execute(
            text(
                "UPDATE ocpp.jobs SET status = 'PROVISIONING', succeeded = 0,"
                " provisioned_at = NULL WHERE id = :j"
            ),
            {"j": accepted["job_id"]},
        )
    assert (await fresh_status(app_with, accepted["status_url"], token))["status"] == "PROVISIONING"
    assert (await reconcile(temporal, settings)).finalized >= 1
    job = await fresh_status(app_with, accepted["status_url"], token)
    assert (job["status"], job["progress"]["succeeded"], job["error"]) == ("READY", 1, None)
    assert job["provisioned_at"] is not None
