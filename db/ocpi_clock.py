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

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# The advisory-lock namespace of OCPI change ordering (the other key is the CPO id).
LOCK_SPACE = 0x0C71


async def stamp_visible_change(session: AsyncSession, cpo_id: int) -> datetime:
    """Lock the CPO's change order until this transaction ends and return the `last_updated` of
    its change. Call it last, right before the stamped UPDATEs, so the lock is held briefly."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:space, :cpo)"),
                          {"space": LOCK_SPACE, "cpo": cpo_id})
    stamp: datetime = (await session.execute(text("SELECT clock_timestamp()"))).scalar_one()
    return stamp


async def pull_barrier(session: AsyncSession, cpo_id: int) -> None:
    """Wait until every change of the CPO stamped so far has committed. One statement: the
    shared lock is taken (queued behind the writers holding it) and released at once, so a
    reader never holds up the writers for longer than this statement."""
    await session.execute(
        text("SELECT pg_advisory_unlock_shared(:space, :cpo)"
             " FROM (SELECT pg_advisory_lock_shared(:space, :cpo)) AS acquired"),
        {"space": LOCK_SPACE, "cpo": cpo_id},
    )
