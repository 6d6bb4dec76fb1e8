"""Each API process remembers a token's owner, a CPO and a job's status briefly
(api/read_cache.py): what that buys a poll, and what it must never cost (another tenant's data,
a revoke ignored, a status older than its setting).

Two apps on one database stand for two API processes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.helpers import create_cpo, location, submit

NOBODY = "read-cache-nobody-polls"  # no worker: the job's rows change only when the test says


async def test_a_status_is_at_most_status_cache_seconds_old(
    app_with: Any,
    admin: dict[str, str],
    engine: AsyncEngine,
    temporal: WorkflowEnvironment,
) -> None:
    async with app_with(task_queue=NOBODY, status_cache_seconds=0.5) as api:
        cpo_id, token = await create_cpo(api, admin)
        accepted = await submit(api, cpo_id, token, [location("Cached A"), location("Cached B")])
        await temporal.client.get_workflow_handle(accepted["job_id"]).terminate("driven by hand")
        url = accepted["status_url"]
        first = (await api.get(url, headers=token)).json()
        assert first["progress"]["succeeded"] == 0
        async with engine.begin() as conn:  # a child commits its location READY
            await conn.execute(
                text("UPDATE ocpp.job_locations SET state = 'READY' WHERE job_id = :j AND index = 0"),
                {"j": accepted["job_id"]},
            )
        assert (await api.get(url, headers=token)).json()["progress"] == first["progress"]  # fresh enough
        await asyncio.sleep(0.6)
        # past 0.5 s: answered at once from memory while one background read refreshes it
        assert (await api.get(url, headers=token)).json()["progress"] == first["progress"]
        for _ in range(50):  # the refresh lands within a few ms on an idle box
            await asyncio.sleep(0.1)
            later = (await api.get(url, headers=token)).json()
            if later["progress"] != first["progress"]:
                break
        assert later["progress"] == {"total": 2, "succeeded": 1, "failed": 0, "in_progress": 1}
        # past 4 x 0.5 s unpolled, the poll reads the rows itself
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE ocpp.job_locations SET state = 'FAILED' WHERE job_id = :j AND index = 1"),
                {"j": accepted["job_id"]},
            )
        await asyncio.sleep(2.1)
        assert (await api.get(url, headers=token)).json()["progress"]["failed"] == 1

        # another CPO's token never reads the cached entry
        _, stranger = await create_cpo(api, admin)
        refused = await api.get(url, headers=stranger)
        assert refused.status_code == 403, refused.text

    # with the cache off, every poll reads the rows
    async with app_with(task_queue=NOBODY, status_cache_seconds=0) as fresh:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE ocpp.job_locations SET state = 'READY' WHERE job_id = :j AND index = 1"),
                {"j": accepted["job_id"]},
            )
        assert (await fresh.get(url, headers=token)).json()["progress"]["succeeded"] == 2


async def test_a_revoke_reaches_other_processes_within_auth_cache_seconds(
    app_with: Any,
    admin: dict[str, str],
) -> None:
    async with app_with(auth_cache_seconds=0.5) as one, app_with(auth_cache_seconds=0.5) as other:
        cpo_id, token = await create_cpo(one, admin)
        listing = f"/ocpi/cpos/{cpo_id}/locations"
        assert (await other.get(listing, headers=token)).status_code == 200  # `other` remembers it
        tokens = (await one.get(f"/ocpi/cpos/{cpo_id}/tokens", headers=admin)).json()["data"]
        revoked = await one.delete(f"/ocpi/cpos/{cpo_id}/tokens/{tokens[0]['token_id']}", headers=admin)
        assert revoked.status_code == 204
        assert (await one.get(listing, headers=token)).status_code == 401  # the revoking process: at once
        await asyncio.sleep(0.6)
        assert (await other.get(listing, headers=token)).status_code == 401  # the others: within the TTL


async def test_unknown_tokens_are_not_remembered(app_with: Any, admin: dict[str, str]) -> None:
    async with app_with() as api:
        cpo_id, _ = await create_cpo(api, admin)
        for n in range(3):
            bad = {"Authorization": f"Bearer cpo_not-a-token-{n}"}
            assert (await api.get(f"/ocpi/cpos/{cpo_id}/locations", headers=bad)).status_code == 401
        cache = api._transport.app.state.services.read_cache  # type: ignore[attr-defined]
        assert len(cache.tokens) == 0


async def settle() -> None:
    """Let every ready task run (the reads are tasks of their own)."""
    for _ in range(5):
        await asyncio.sleep(0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_refreshed_reads_once_for_all_waiters_and_ahead_of_expiry(monkeypatch: Any) -> None:
    """The pollers of one key share one read; a key in steady use is read again in the
    background before it expires, so no request waits on it; a read voided by a clear (a revoke)
    stores nothing; an unknown key (None) is never stored."""
    from api import read_cache

    clock = FakeClock()
    monkeypatch.setattr(read_cache.time, "monotonic", clock)
    cache: read_cache.Refreshed[str, str] = read_cache.Refreshed(fresh=4.0, max_age=5.0)
    gate = asyncio.Event()
    reads: list[str] = []

    async def load() -> str:
        reads.append("read")
        number = len(reads)
        await gate.wait()
        return f"value {number}"

    waiting = [asyncio.create_task(cache.get("k", load)) for _ in range(5)]
    await settle()
    assert reads == ["read"] and not any(t.done() for t in waiting)  # one read, five waiters
    gate.set()
    assert await asyncio.gather(*waiting) == ["value 1"] * 5

    gate.clear()
    clock.now += 4.5  # past `fresh`, within `max_age`: answered at once, read again behind
    assert await cache.get("k", load) == "value 1"
    await settle()
    assert await cache.get("k", load) == "value 1"
    await settle()
    assert len(reads) == 2  # one refresh at a time
    gate.set()
    await settle()
    clock.now += 3.0  # 7.5 s after the first read, 3 s after the refresh began: still fresh
    assert await cache.get("k", load) == "value 2" and len(reads) == 2

    gate.clear()
    clock.now += 2.5  # past `max_age`: the request reads it itself, and a clear voids that read
    pending = asyncio.create_task(cache.get("k", load))
    await settle()
    cache.clear()  # a revoke: a request from now on does not wait for the read begun before
    after = asyncio.create_task(cache.get("k", load))
    await settle()
    assert len(reads) == 4
    gate.set()
    assert await pending == "value 3"
    assert await after == "value 4"
    assert len(cache) == 1  # only the read begun after the clear is kept

    async def unknown() -> str | None:
        return None

    assert await cache.get("nobody", unknown) is None and len(cache) == 1  # "k" only


async def test_status_pages_are_bounded_in_bytes() -> None:
    """The status cache holds at most its byte bound (each value weighed by its JSON length),
    evicting the least recently used; a value larger than the whole bound is answered, not kept.
    Before, it was bounded by entries only: 10,000 pages of ~1.4 MB."""
    from api import read_cache

    cache: read_cache.Refreshed[int, dict[str, str]] = read_cache.Refreshed(
        fresh=60.0, max_age=60.0, max_bytes=10_000
    )

    def page(size: int) -> Any:
        async def load() -> dict[str, str]:
            return {"results": "x" * size}

        return load

    for key in range(10):
        assert await cache.get(key, page(3_000)) == {"results": "x" * 3_000}
    assert len(cache) == 3  # 3 x ~3 KB fit in 10 KB, the oldest went first
    assert sum(read_cache._json_size(v) for v in cache._entries.values()) <= 10_000
    assert 9 in cache._entries and 0 not in cache._entries
    assert await cache.get(99, page(50_000)) == {"results": "x" * 50_000}
    assert 99 not in cache._entries
