"""Graceful shutdown: SIGTERM lets the worker and the API finish what they hold."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.faults.stack import ADMIN, JOB_SIZE, FaultStack, Job, check_books
from tests.helpers import create_cpo

pytestmark = pytest.mark.faults


async def test_sigterm_lets_the_worker_go_gracefully(
    stack: FaultStack, api: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """SIGTERM: the worker stops polling, lets in-flight activities finish (or hands them back
    within its grace period), and exits 0; the job then completes on the next worker."""
    assert stack.worker is not None and stack.settings is not None
    job = await Job.submit(api, "TERM")
    await job.wait_progress(JOB_SIZE // 3)
    started = time.monotonic()
    stack.worker.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(stack.worker.wait, 60)
    stopped_in = time.monotonic() - started
    print(
        f"\n[SIGTERM] worker exited {code} after {stopped_in:.1f}s "
        f"(grace {stack.settings.worker_shutdown_grace_seconds}s)"
    )
    assert code == 0, stack.worker_log_tail()
    stack.start_worker()
    result = await job.wait_end(stack)
    assert result["status"] == "READY", result["error"]
    await check_books(stack, db, job, result, "SIGTERM worker")


async def test_sigterm_lets_the_api_finish_in_flight_requests(stack: FaultStack) -> None:
    """uvicorn under SIGTERM stops accepting, but the bulk POST already in flight gets its 202."""
    api_proc = stack.start_api()  # uvicorn on the stack's API port, the suite's settings
    try:
        await asyncio.to_thread(stack.wait_api)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.api}", timeout=60) as client:
            cpo_id, token = await create_cpo(client, {"Authorization": f"Bearer {ADMIN}"})
            body = {
                "locations": [
                    {
                        "name": f"Term {i}",
                        "address": "Rue de la Loi 16",
                        "city": "Brussels",
                        "country": "BE",
                        "coordinates": {"latitude": 50.8, "longitude": 4.3},
                        "timezone": "Europe/Brussels",
                    }
                    for i in range(10_000)  # a request that takes a moment to validate and store
                ]
            }

            async def post() -> tuple[httpx.Response, float]:
                response = await client.post(f"/ocpi/cpos/{cpo_id}/locations", json=body, headers=token)
                return response, time.monotonic()

            in_flight = asyncio.create_task(post())
            await asyncio.sleep(0.2)
            signalled = time.monotonic()
            api_proc.send_signal(signal.SIGTERM)
            response, answered = await in_flight
        code = await asyncio.to_thread(api_proc.wait, 60)
    finally:
        if api_proc.poll() is None:
            api_proc.kill()
    print(
        f"\n[SIGTERM API] POST answered {response.status_code} {answered - signalled:.2f}s after "
        f"SIGTERM; API exited {code}"
    )
    assert answered > signalled  # it really was in flight
    assert response.status_code == 202, response.text
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
