"""A job larger than the window, and one that continues-as-new, complete with correct counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.payloads import JobProgress
from tests.helpers import charger, create_cpo, expected_counts, location, submit, table_counts, wait_for_job


def max_children_in_flight(history: WorkflowHistory) -> int:
    """The most children one run had started and not yet seen close."""
    open_now = peak = 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            open_now += 1
            peak = max(peak, open_now)
        elif event.event_type in (
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED,
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED,
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED,
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED,
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT,
        ):
            open_now -= 1
    return peak


async def test_window_bounds_children_and_continue_as_new_carries_progress(
    app_with: Any,
    admin: dict[str, str],
    workers: list[Worker],
    engine: AsyncEngine,
    temporal: WorkflowEnvironment,
) -> None:
    async with app_with(child_window=2, children_per_run=3) as client:
        cpo_id, token = await create_cpo(client, admin)
        locations = [location(f"Site {i}", [charger(f"CAN-{cpo_id}-{i}")] if i % 2 else []) for i in range(8)]
        accepted = await submit(client, cpo_id, token, locations)
        # Wait on the workflow itself (it follows continue-as-new), not by polling its query:
        # the time-skipping test server has mishandled queries racing a continue-as-new here.
        await temporal.client.get_workflow_handle(accepted["job_id"]).result()
        job = await wait_for_job(client, accepted["status_url"], token)

    assert job["status"] == "READY", job
    assert job["progress"] == {"total": 8, "succeeded": 8, "failed": 0, "in_progress": 0}
    assert [loc["index"] for loc in job["results"]["locations"]] == list(range(8))
    assert len(set(job["results"]["location_ids"])) == 8
    assert await table_counts(engine, cpo_id) == expected_counts([[1] if i % 2 else [] for i in range(8)])

    # 8 children at 3 per run: three runs, chained by continue-as-new, none over the window
    runs: list[WorkflowHistory] = []
    run_id: str | None = accepted["workflow_run_id"]
    while run_id:
        history = await temporal.client.get_workflow_handle(accepted["job_id"], run_id=run_id).fetch_history()
        runs.append(history)
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            else None
        )
    assert len(runs) == 3
    assert [max_children_in_flight(h) for h in runs] == [2, 2, 2]
    final = await temporal.client.get_workflow_handle(accepted["job_id"]).query(
        "status", result_type=JobProgress
    )
    assert (final.runs, final.succeeded, final.total) == (3, 8, 8)
