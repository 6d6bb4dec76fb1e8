"""Waiting a bounded time for a workflow to close, from the API."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle

OPEN = (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW)


async def wait_closed(handle: WorkflowHandle[Any, Any], seconds: float) -> bool:
    """True once the workflow (its latest run) has closed, False if it is still running after
    `seconds`. A long-polled `result()` first (a closed run answers at once); it can come back
    empty, though (seen under load on the test server: "No completion event found"), and a
    request must never turn that into a 500, so the rest of the time is spent polling
    `describe()`."""
    deadline = time.monotonic() + seconds
    try:
        await asyncio.wait_for(handle.result(), timeout=seconds)
        return True
    except WorkflowFailureError:  # failed, cancelled, terminated: closed all the same
        return True
    except TimeoutError:
        return False
    except RuntimeError:
        pass  # the long poll came back without the close event
    pause = 0.05
    while True:
        remaining = deadline - time.monotonic()
        description = await handle.describe(rpc_timeout=timedelta(seconds=max(min(remaining, 5.0), 0.5)))
        if description.status not in OPEN:
            return True
        if remaining <= 0:
            return False
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.5)
