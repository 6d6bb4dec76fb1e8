"""The reads a new job is checked against go in one pipeline (api/creation_reads.py): they must
still run under the CPO's creation lock, see what a racing POST committed once it has the lock,
and keep the lock until the job's rows are committed."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from api.bulk_jobs import UNKEYED, create_job_rows, create_or_reuse_job
from api.creation_reads import CreationReads, read_for_creation
from api.schemas import BulkCreateRequest
from db.engine import make_sessionmaker
from tests.helpers import charger, create_cpo, location, unique


async def test_a_racing_creation_waits_for_the_lock_and_then_sees_the_first_job(
    app_client: httpx.AsyncClient, admin: dict[str, str], engine: AsyncEngine
) -> None:
    cpo, _ = await create_cpo(app_client, admin)
    cpo_id = int(cpo)
    wanted, other = unique("RACE"), unique("FREE")
    body = BulkCreateRequest.model_validate(
        {"locations": [location("Race A", [charger(wanted)]), location("Race B", [])]}
    )
    sessions = make_sessionmaker(engine)
    async with sessions() as first, sessions() as second:
        before = await read_for_creation(first, cpo_id, {wanted, other}, lock=True)
        assert (before.existing, before.claimed) == (frozenset(), frozenset())

        racing = asyncio.create_task(read_for_creation(second, cpo_id, {wanted, other}, lock=True))
        await asyncio.sleep(0.5)
        assert not racing.done(), "the second creation read past the first one's lock"

        await create_job_rows(first, cpo_id, body, None, UNKEYED)  # commits: the lock is released
        after = await asyncio.wait_for(racing, timeout=10)
        await second.rollback()

    assert after.claimed == frozenset({wanted})  # the other identity is still free
    assert after.existing == frozenset()  # claimed by a running job, not written yet
    assert after.running_jobs == before.running_jobs + 1
    assert after.queued_locations == before.queued_locations + 2


async def test_a_body_without_explicit_chargers_takes_no_lock_and_is_checked_on_the_reads(
    app_client: httpx.AsyncClient, admin: dict[str, str], engine: AsyncEngine
) -> None:
    cpo, _ = await create_cpo(app_client, admin)
    body = BulkCreateRequest.model_validate({"locations": [location("No chargers", [])]})
    checked: list[CreationReads] = []
    sessions = make_sessionmaker(engine)
    async with sessions() as first, sessions() as second:
        held = await read_for_creation(first, int(cpo), {unique("HELD")}, lock=True)
        # created while the first holds the CPO's lock: no identity to race for, nothing to wait for
        job, created = await asyncio.wait_for(
            create_or_reuse_job(second, int(cpo), body, None, check=checked.append), timeout=5
        )
        await first.rollback()
    assert created and job.total == 1
    [reads] = checked  # the check ran once, on what was read before the job existed
    assert (
        (reads.running_jobs, reads.queued_locations) == (held.running_jobs, held.queued_locations) == (0, 0)
    )
    assert reads.existing == reads.claimed == frozenset()
