"""When an OCPI change becomes visible, and in what order: one clock (PostgreSQL's) and one lock.

Every write that changes what an eMSP sees (activation, a PATCH, a removal) ends its transaction
with `stamp_visible_change`: it takes the CPO's change lock (a transaction-scoped advisory lock,
held until commit) and then reads the database's clock. Writers of one CPO therefore commit in
the order of their stamps, and the stamp is taken after all the transaction's other work, just
before its commit. A reader that starts its statements after `pull_barrier` sees every change
stamped before that moment: so an eMSP that pulls with `date_from` = the largest `last_updated`
it has seen (or the time of its previous pull, on our clock) never misses a change. No host's
clock orders anything: `last_updated` is PostgreSQL's, and the push order is `version`, a
per-location counter bumped in the same statement.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# The advisory-lock namespace of OCPI change ordering (the other key is the CPO id).
LOCK_SPACE = 0x0C71


# The lock, then the clock, in one statement: the subquery's volatile call is evaluated (and its
# lock taken) before the outer one reads the clock (PostgreSQL never flattens a subquery with a
# volatile function in its target list), as in `pull_barrier`.
STAMP = (
    "SELECT clock_timestamp() FROM (SELECT pg_advisory_xact_lock(%(space)s, %(cpo)s) AS locked) AS acquired"
)
STAMP_TEXT = text(STAMP.replace("%(space)s", ":space").replace("%(cpo)s", ":cpo"))


async def stamp_visible_change(db: AsyncSession | psycopg.AsyncConnection[Any], cpo_id: int) -> datetime:
    """Lock the CPO's change order until this transaction ends and return the `last_updated` of
    its change. Call it last, right before the stamped UPDATEs, so the lock is held briefly.

    `db`: an ORM session, or a psycopg connection in its transaction (db/pipelined.py)."""
    args = {"space": LOCK_SPACE, "cpo": cpo_id}
    if isinstance(db, AsyncSession):
        stamp: datetime = (await db.execute(STAMP_TEXT, args)).scalar_one()
        return stamp
    cursor = await db.execute(STAMP, args)
    row = await cursor.fetchone()
    assert row is not None
    found: datetime = row[0]
    return found


async def pull_barrier(session: AsyncSession, cpo_id: int) -> None:
    """Wait until every change of the CPO stamped so far has committed. One statement: the
    shared lock is taken (queued behind the writers holding it) and released at once, so a
    reader never holds up the writers for longer than this statement."""
    await session.execute(
        text(
            "SELECT pg_advisory_unlock_shared(:space, :cpo)"
            " FROM (SELECT pg_advisory_lock_shared(:space, :cpo)) AS acquired"
        ),
        {"space": LOCK_SPACE, "cpo": cpo_id},
    )
