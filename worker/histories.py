"""What a job cost in Temporal: history events, workflow tasks and activity tasks, from the histories.

Every workflow of a job has an ID starting with the job id (the parent's runs: the job id; the
children: `<job id>/location-<index>`), so the dev server's visibility lists them all with
`WorkflowId STARTS_WITH`. Visibility gives each closed run's history length, so the maximum over
all workflows needs no history fetch; the per-location counts come from a sample of histories.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

WORKFLOW_TASK = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
ACTIVITY_TASK = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
ACTIVITY_STARTED = EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
WORKFLOW_TASK_STARTED = EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
WORKFLOW_TASK_TIMED_OUT = EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT


@dataclass
class HistoryCounts:
    events: int = 0
    workflow_tasks: int = 0
    activity_tasks: int = 0
    timed_out: int = 0  # workflow tasks that timed out (and ran again): a sign of an overloaded worker


@dataclass
class JobHistories:
    parent_runs: int = 0
    parent_events: int = 0  # all runs of the parent together
    parent_max_events: int = 0
    children: int = 0
    child_max_events: int = 0
    sampled: int = 0
    child: HistoryCounts = field(default_factory=HistoryCounts)  # mean over the sample
    parent: HistoryCounts = field(default_factory=HistoryCounts)  # all runs together

    @property
    def max_events(self) -> int:
        return max(self.parent_max_events, self.child_max_events)

    def per_location(self) -> HistoryCounts:
        """One location's share: its child's history plus 1/N of the parent's."""
        n = max(self.children, 1)
        return HistoryCounts(
            round(self.child.events + self.parent.events / n),
            round(self.child.workflow_tasks + self.parent.workflow_tasks / n),
            round(self.child.activity_tasks + self.parent.activity_tasks / n),
        )


async def count_history(client: Client, workflow_id: str, run_id: str | None = None) -> HistoryCounts:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    kinds = Counter(event.event_type for event in history.events)
    return HistoryCounts(
        len(history.events), kinds[WORKFLOW_TASK], kinds[ACTIVITY_TASK], kinds[WORKFLOW_TASK_TIMED_OUT]
    )


async def job_histories(client: Client, job_id: str, sample: int = 50, seed: int = 7) -> JobHistories:
    result = JobHistories()
    parent_runs: list[str] = []
    children: list[str] = []
    async for execution in client.list_workflows(f'WorkflowId STARTS_WITH "{job_id}"'):
        if execution.id == job_id:
            parent_runs.append(execution.run_id)
            result.parent_max_events = max(result.parent_max_events, execution.history_length)
        else:
            children.append(execution.id)
            result.child_max_events = max(result.child_max_events, execution.history_length)
    result.parent_runs, result.children = len(parent_runs), len(children)
    for run_id in parent_runs:  # a handful (one per `children_per_run` locations)
        counts = await count_history(client, job_id, run_id)
        result.parent.events += counts.events
        result.parent.workflow_tasks += counts.workflow_tasks
        result.parent.activity_tasks += counts.activity_tasks
        result.parent.timed_out += counts.timed_out
        result.parent_max_events = max(result.parent_max_events, counts.events)
    picked = random.Random(seed).sample(children, min(sample, len(children)))
    gate = asyncio.Semaphore(8)

    async def one(workflow_id: str) -> HistoryCounts:
        async with gate:
            return await count_history(client, workflow_id)

    counted = await asyncio.gather(*(one(w) for w in picked))
    if counted:
        result.sampled = len(counted)
        result.child = HistoryCounts(
            round(sum(c.events for c in counted) / len(counted)),
            round(sum(c.workflow_tasks for c in counted) / len(counted)),
            round(sum(c.activity_tasks for c in counted) / len(counted)),
            sum(c.timed_out for c in counted),  # the sample's total, not a mean
        )
        result.child_max_events = max(result.child_max_events, *(c.events for c in counted))
    return result


async def work_by_identity(client: Client, job_id: str) -> dict[str, Counter[str]]:
    """Which worker did what: ActivityTaskStarted and WorkflowTaskStarted events per worker
    identity (`pid@host` by default), over every workflow of the job."""
    ids: list[tuple[str, str]] = []
    async for execution in client.list_workflows(f'WorkflowId STARTS_WITH "{job_id}"'):
        ids.append((execution.id, execution.run_id))
    activities: Counter[str] = Counter()
    workflow_tasks: Counter[str] = Counter()
    gate = asyncio.Semaphore(8)

    async def one(workflow_id: str, run_id: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        for event in history.events:
            if event.event_type == ACTIVITY_STARTED:
                activities[event.activity_task_started_event_attributes.identity] += 1
            elif event.event_type == WORKFLOW_TASK_STARTED:
                workflow_tasks[event.workflow_task_started_event_attributes.identity] += 1

    await asyncio.gather(*(one(w, r) for w, r in ids))
    return {"activities": activities, "workflow_tasks": workflow_tasks}
