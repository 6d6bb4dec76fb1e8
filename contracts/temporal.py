"""Temporal names shared by the starters and the workers, and the one way to connect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from temporalio.client import Client, Plugin
from temporalio.common import Priority, SearchAttributeKey
from temporalio.runtime import Runtime

if TYPE_CHECKING:
    from settings import Settings

# Custom search attributes (registered by the dev server's --search-attribute, by the tests
# through the operator service, and by `temporal operator search-attribute create` in production).
CPO_ID = SearchAttributeKey.for_keyword("CpoId")
JOB_STATUS = SearchAttributeKey.for_keyword("JobStatus")
# The error codes of a job's failed locations (each code once), so that an operator finds the
# jobs that hit one: `ErrorCode = 'ECS_CAPACITY'` in a visibility query.
ERROR_CODES = SearchAttributeKey.for_keyword_list("ErrorCode")
SEARCH_ATTRIBUTES: dict[str, str] = {"CpoId": "Keyword", "JobStatus": "Keyword", "ErrorCode": "KeywordList"}

# Task priority on the shared task queues (lower goes first): a PATCH, a DELETE or a job's cancel,
# which someone waits on, goes ahead of bulk provisioning. Within a priority, the fairness key (the
# CPO) shares dispatch between CPOs: one CPO's 10,000 locations do not hold another's one.
# Children and activities inherit their workflow's priority.
PRIORITY_INTERACTIVE = 1
PRIORITY_BULK = 3  # the server's default level of 1..5


def fairness_key(cpo_id: int | str) -> str:
    return f"cpo-{cpo_id}"


def bulk_priority(cpo_id: int | str) -> Priority:
    return Priority(priority_key=PRIORITY_BULK, fairness_key=fairness_key(cpo_id))


def interactive_priority(cpo_id: int | str) -> Priority:
    return Priority(priority_key=PRIORITY_INTERACTIVE, fairness_key=fairness_key(cpo_id))


async def connect(
    settings: Settings, runtime: Runtime | None = None, plugins: Sequence[Plugin] = ()
) -> Client:
    """The client of the API, the worker, the dev stack and the tests. `runtime`: the worker's,
    which serves the SDK's metrics; `plugins`: tracing (`observability.tracing`), which the
    workers built on this client inherit."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key,
        tls=settings.temporal_tls,
        runtime=runtime,
        plugins=plugins,
    )
