"""Starting a job's workflow without holding its 202 hostage to Temporal's load.

The job is durable once its rows are committed in PostgreSQL: from then on it will run, whoever
starts its workflow. The POST waits for the start at most `job_start_wait_seconds`; a start
that takes longer (a Temporal server busy with other jobs' children) goes on in this process
after the 202, which then carries `workflow_run_id: null` (the status shows it once known). If
this process dies before such a start lands, the reconciler starts the job's workflow, same id
(activities/reconcile.py). A start that fails within the wait is the POST's answer (503), as
before: the job is then removed, since nothing would run it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from contracts.job_start import start_job
from db.models import Job
from settings import Settings

log = logging.getLogger("api")


class StartRefused(Exception):
    """Temporal answered the start with an error other than a deadline: nothing will run the job."""

    def __init__(self, error: RPCError) -> None:
        super().__init__(str(error))
        self.error = error


class JobStarts:
    """The starts of this process: the one being made for each job, awaited by whoever asks for
    the same job again (a repeated POST, a cancel) and by the shutdown."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        timed: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        self._sessions = sessions
        self._timed = timed  # times each start (the API's workflow-start metric)
        self._pending: dict[str, asyncio.Task[str | None]] = {}
        self._unawaited: set[str] = set()  # jobs whose 202 went out before their start ended

    async def start(self, client: Client, settings: Settings, job: Job, wait: float) -> str | None:
        """The run id, once started within `wait` seconds; None when the start goes on after the
        answer (or may have reached Temporal: a deadline). Raises StartRefused when Temporal
        refused it within the wait."""
        task = self._pending.get(job.id)
        if task is None:
            task = asyncio.create_task(self._start(client, settings, job.id, job.cpo_id, job.total))
            self._pending[job.id] = task
            task.add_done_callback(lambda done: self._ended(job.id, done))
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            self._unawaited.add(job.id)
            log.info("job %s: its workflow start goes on after the 202", job.id)
            return None

    async def settled(self, job_id: str, wait: float) -> None:
        """Wait (bounded) for this process's start of the job, if one is under way."""
        task = self._pending.get(job_id)
        if task is not None:
            await asyncio.wait({task}, timeout=wait)

    async def drain(self, wait: float) -> None:
        """At shutdown: let the starts under way land (what does not, the reconciler starts)."""
        if self._pending:
            await asyncio.wait(set(self._pending.values()), timeout=wait)

    async def _start(
        self, client: Client, settings: Settings, job_id: str, cpo_id: int, total: int
    ) -> str | None:
        try:
            with self._timed():
                handle = await start_job(client, settings, job_id, cpo_id, total, "the API")
        except WorkflowAlreadyStartedError:  # it ran and closed already: nothing to start
            return None
        except RPCError as err:
            if err.status == RPCStatusCode.DEADLINE_EXCEEDED:
                # it may have reached Temporal; if not, the reconciler starts it (same id)
                return None
            raise StartRefused(err) from err
        run_id = handle.first_execution_run_id or handle.result_run_id
        if run_id:
            async with self._sessions() as session:
                await session.execute(
                    update(Job)
                    .where(col(Job.id) == job_id, col(Job.workflow_run_id).is_(None))
                    .values(workflow_run_id=run_id)
                )
                await session.commit()
        return run_id

    def _ended(self, job_id: str, task: asyncio.Task[str | None]) -> None:
        self._pending.pop(job_id, None)
        late = job_id in self._unawaited
        self._unawaited.discard(job_id)
        if late and not task.cancelled() and (err := task.exception()) is not None:
            # the 202 went out: the job stays PROVISIONING, and the reconciler starts its
            # workflow after its grace period
            log.warning(
                "job %s: its workflow start failed after the 202 (%s); the reconciler will start it",
                job_id,
                err,
            )
