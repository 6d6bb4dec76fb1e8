"""db/pipelined.transaction: one wait for the server per transaction (its BEGIN and COMMIT go
with its statements, as libpq's trace shows), committed at the end, rolled back on any error,
and its connection back in the pool as it came (out of autocommit mode, no transaction open)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg.pq import Trace
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import pipelined
from db.engine import make_engine, make_sessionmaker
from settings import Settings

INSERT_CPO = (
    "INSERT INTO ocpp.partner_operations (name, country_code, party_id, created_at, updated_at) "
    "VALUES (%s, 'NL', %s, now(), now())"  # the suite's other CPOs are BE
)


@pytest_asyncio.fixture(loop_scope="session")
async def traced(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, Path]]:
    """An engine of its own (one connection) whose connections write libpq's trace to a file."""
    engine = make_engine(settings.model_copy(update={"db_pool_size": 1}))
    trace = (tmp_path / "libpq.trace").open("w")

    @event.listens_for(engine.sync_engine, "connect")
    def _trace(dbapi_connection: Any, _record: Any) -> None:
        pgconn = dbapi_connection.driver_connection.pgconn
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)

    yield engine, tmp_path / "libpq.trace"
    await engine.dispose()
    trace.close()


async def names(engine: AsyncEngine, *parties: str) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT party_id FROM ocpp.partner_operations"
                " WHERE country_code = 'NL' AND party_id = ANY(:p)"
            ),
            {"p": list(parties)},
        )
        return {row[0] for row in rows}


async def pool_state(engine: AsyncEngine) -> tuple[bool, str]:
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert isinstance(driver, psycopg.AsyncConnection)
        return driver.autocommit, driver.info.transaction_status.name


@pytest.mark.asyncio(loop_scope="session")
async def test_one_wait_a_commit_and_rollbacks(traced: tuple[AsyncEngine, Path], engine: AsyncEngine) -> None:
    mine, path = traced
    sessions = make_sessionmaker(mine)
    await pool_state(mine)  # the pool's connection exists (its set-up is not counted)
    committed, second, raised, refused = "pl1", "pl2", "pl3", "pl4"

    before = path.stat().st_size
    async with pipelined.transaction(sessions) as conn:
        await conn.execute(INSERT_CPO, ("pipelined", committed))
        await conn.execute(INSERT_CPO, ("pipelined, second", second))
    sent = [line.split("\t")[2] for line in path.read_text()[before:].splitlines() if line.startswith("F")]
    assert sent.count("Sync") == 1, sent  # BEGIN, both INSERTs and COMMIT: one wait
    assert await names(engine, committed, second) == {committed, second}
    assert await pool_state(mine) == (False, "IDLE")

    with pytest.raises(RuntimeError):
        async with pipelined.transaction(sessions) as conn:
            await conn.execute(INSERT_CPO, ("rolled back", raised))
            raise RuntimeError("the caller fails after a statement")
    assert await names(engine, raised) == set()
    assert await pool_state(mine) == (False, "IDLE")

    with pytest.raises(psycopg.errors.UniqueViolation):
        async with pipelined.transaction(sessions) as conn:
            await conn.execute(INSERT_CPO, ("written, then undone", refused))
            await conn.execute(INSERT_CPO, ("the same party again", refused))
    assert await names(engine, refused) == set()
    assert await pool_state(mine) == (False, "IDLE")
