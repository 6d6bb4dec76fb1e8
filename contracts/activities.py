"""The activities' typed interfaces: what a workflow may call, with argument and result types.

Workflows call `workflow.execute_activity_method(EcsTasks.start_charger_task, …)` on these
classes, so mypy checks every call; the implementations in `activities/` subclass them (mypy
checks that each override keeps the signature) and register under the same names (an activity's
name is its method's name). The workflow sandbox imports this module, not the implementations:
it holds no I/O and no state, so the worker passes the whole `contracts` package through the
sandbox (imported once, as for the standard library) while database and AWS code never enters it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from temporalio import activity

from contracts.payloads import (
    ActivateInput,
    CallbackInput,
    ChargerTaskInput,
    JobCounts,
    JobOutcome,
    LocationOutcome,
    LocationPatch,
    LocationPlan,
    LocationRef,
    ProvisionInput,
    ReconcileInput,
    ReconcileReport,
    StopTasksInput,
    TaskRef,
    WaitTasksInput,
)


class LocationRows(ABC):
    """Tables 1-9 of one location: written, activated or deleted, one transaction each."""

    @activity.defn
    @abstractmethod
    async def write_location_rows(self, inp: ProvisionInput) -> LocationPlan: ...

    @activity.defn
    @abstractmethod
    async def activate_location(self, inp: ActivateInput) -> None: ...

    @activity.defn
    @abstractmethod
    async def delete_location_rows(self, location_id: str) -> int: ...


class JobState(ABC):
    """The job's own rows: each location's outcome, the job's."""

    @activity.defn
    @abstractmethod
    async def record_location_outcome(self, outcome: LocationOutcome) -> None: ...

    @activity.defn
    @abstractmethod
    async def cancel_pending_locations(self, job_id: str) -> JobCounts: ...

    @activity.defn
    @abstractmethod
    async def finalize_job(self, outcome: JobOutcome) -> None: ...


class JobCallbacks(ABC):
    """The signed completion callback of a job, to the CPO's receiver."""

    @activity.defn
    @abstractmethod
    async def deliver_job_callback(self, job_id: str) -> str: ...

    @activity.defn
    @abstractmethod
    async def start_job_callback(self, inp: CallbackInput) -> None: ...


class EcsTasks(ABC):
    """One ECS task per charger; these run on the rate-limited ECS task queue."""

    @activity.defn
    @abstractmethod
    async def start_charger_task(self, inp: ChargerTaskInput) -> TaskRef: ...

    @activity.defn
    @abstractmethod
    async def wait_tasks_running(self, inp: WaitTasksInput) -> None: ...

    @activity.defn
    @abstractmethod
    async def stop_location_tasks(self, inp: StopTasksInput) -> int: ...


class LocationChanges(ABC):
    """PATCH and DELETE of a provisioned location."""

    @activity.defn
    @abstractmethod
    async def mark_location_decommissioning(self, ref: LocationRef) -> list[str] | None: ...

    @activity.defn
    @abstractmethod
    async def update_location_fields(self, patch: LocationPatch) -> bool: ...


class JobReconciler(ABC):
    """Repairs jobs left PROVISIONING with no workflow to end them (run by a Temporal Schedule)."""

    @activity.defn
    @abstractmethod
    async def reconcile_jobs(self, inp: ReconcileInput) -> ReconcileReport: ...
