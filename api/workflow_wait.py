"""Waiting a bounded time for a workflow to close, from the API."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle


async def wait_closed(handle: WorkflowHandle[Any, Any], seconds: float) -> bool:
    """True once the workflow (its latest run) has closed, False if it is still running after
    `seconds`. Polls `describe()` rather than long-polling `result()`: the long poll can come
    back empty (seen under load on the test server: "No completion event found"), and a
    request must never turn that into a 500."""
    deadline = time.monotonic() + seconds
    pause = 0.05
    while True:
        remaining = deadline - time.monotonic()
        description = await handle.describe(rpc_timeout=timedelta(seconds=max(min(remaining, 5.0), 0.5)))
        if description.status not in (WorkflowExecutionStatus.RUNNING,
                                      WorkflowExecutionStatus.CONTINUED_AS_NEW):
            return True
        if remaining <= 0:
            return False
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.5)
