"""The bench's HTTP client side: the routes it times, how it counts a client error, polling
without ever dying on one, and its own event-loop lag."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

STATUS_ROUTE = "/ocpi/cpos/{cpo_id}/locations/jobs/{job_id}"
BULK_ROUTE = "/ocpi/cpos/{cpo_id}/locations"

# A client error (the API unreachable, a connection reset while polling, a 5xx) is counted
# against the scenario and the client goes on; a poller gives up after this many in a row.
MAX_CONSECUTIVE_ERRORS = 50


class PostRefused(RuntimeError):
    """A POST that did not answer 202."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"POST answered {status}: {text[:500]}")
        self.status = status


def error_kind(err: BaseException) -> str:
    """How an error is counted: its type, e.g. `ReadError`, `ConnectError`, `HTTP 503`."""
    if isinstance(err, httpx.HTTPStatusError):
        return f"HTTP {err.response.status_code}"
    if isinstance(err, PostRefused):
        return f"POST answered {err.status}"
    return type(err).__name__


async def loop_lag(done: asyncio.Event, lags: list[float], every: float = 0.010) -> None:
    """How late this process's event loop wakes up: on one small box the client waits for a
    core too, and that wait is in every latency it measures."""
    while not done.is_set():
        started = time.perf_counter()
        await asyncio.sleep(every)
        lags.append(max(0.0, time.perf_counter() - started - every))


async def poll(
    http: httpx.AsyncClient,
    status_url: str,
    token: dict[str, str],
    on_error: Callable[[BaseException], None],
    interval: float = 0.1,
) -> dict[str, Any]:
    failed = 0
    while True:
        try:
            status = (await http.get(status_url, headers=token)).json()
            failed = 0
        except (httpx.HTTPError, ValueError) as err:
            on_error(err)
            failed += 1
            if failed >= MAX_CONSECUTIVE_ERRORS:
                raise
            await asyncio.sleep(interval)
            continue
        if status.get("status") not in ("PENDING", "PROVISIONING"):
            return dict(status)
        await asyncio.sleep(interval)
