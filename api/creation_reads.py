"""What a new job is checked against, read in one round trip: the CPO's creation lock, its
running jobs and queued locations (the quota), and which requested charger identities exist in
the CPO or are claimed by one of its running jobs.

Through the session each of these reads was a round trip of its own, BEGIN one more, and under
load each waits behind the workers' transactions for PostgreSQL and a core. Here they go as one
psycopg pipeline on the session's own connection, inside its transaction (so the lock holds
until the job's rows are committed): the lock and the reads leave together, and the server runs
them in order, the reads once the lock is granted. (psycopg still sends the transaction's BEGIN
first and waits for it: the session owns the transaction, so db/pipelined.py's way around that
does not apply.) The checks themselves are plain functions of what was read (`check_cpo_quota`
in api/bulk_jobs.py, `identity_conflicts` in api/normalize.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.vocabulary import JobStatus

# the first key of the advisory lock taken while a CPO's job is created (the second is the CPO)
JOB_CREATION_LOCK = 0x6A6F62  # "job"

LOCK = "SELECT pg_advisory_xact_lock(%(lock)s, %(cpo)s)"

QUOTA = """
    SELECT count(*), coalesce(sum(total), 0) FROM ocpp.jobs
    WHERE cpo_id = %(cpo)s AND status = %(running)s"""

# one array parameter, not one per identity: PostgreSQL allows 65,535 parameters
EXISTING = """
    SELECT identity FROM ocpp.charge_points
    WHERE network_id = %(cpo)s AND identity = ANY(%(identities)s)"""

# identities of the chargers of the CPO's running jobs whose locations have no outcome yet (their
# rows may not be written yet)
CLAIMED = """
    SELECT DISTINCT c.value->>'identity'
    FROM ocpp.job_locations jl
    JOIN ocpp.jobs j ON j.id = jl.job_id
    CROSS JOIN LATERAL jsonb_array_elements(jl.input->'chargers') AS c(value)
    WHERE j.cpo_id = %(cpo)s AND j.status = %(running)s AND jl.state = %(pending)s
      AND c.value->>'identity' = ANY(%(identities)s)"""


@dataclass(frozen=True)
class CreationReads:
    """What the checks of a new job need, read at one moment under the lock."""

    running_jobs: int
    queued_locations: int  # the locations of the CPO's running jobs
    existing: frozenset[str]  # requested identities the CPO has
    claimed: frozenset[str]  # requested identities a running job of the CPO will create


async def read_for_creation(
    session: AsyncSession, cpo_id: int, identities: Collection[str], *, lock: bool
) -> CreationReads:
    """The reads, in the session's transaction; with `lock`, after the CPO's job-creation lock
    (transaction-scoped: held until the session commits or rolls back)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert isinstance(driver, psycopg.AsyncConnection)
    args: dict[str, Any] = {
        "lock": JOB_CREATION_LOCK,
        "cpo": cpo_id,
        "running": JobStatus.PROVISIONING.value,
        "pending": JobStatus.PENDING.value,
        "identities": list(identities),
    }
    async with driver.pipeline():
        if lock:
            await driver.execute(LOCK, args)
        quota = await driver.execute(QUOTA, args)
        existing = await driver.execute(EXISTING, args) if identities else None
        claimed = await driver.execute(CLAIMED, args) if identities else None
    # the pipeline's end waited for every answer
    row = await quota.fetchone()
    assert row is not None  # an aggregate always answers one row
    running, queued = row
    found = frozenset(r[0] for r in await existing.fetchall()) if existing else frozenset()
    pending = frozenset(r[0] for r in await claimed.fetchall()) if claimed else frozenset()
    return CreationReads(
        running_jobs=int(running), queued_locations=int(queued), existing=found, claimed=pending - found
    )
