"""One transaction on a pooled psycopg connection, its statements pipelined: for the worker's hot
activities (writing a location's rows, starting a charger, activating a location).

Through an ORM session every statement is a round trip of its own (BEGIN and COMMIT included)
and goes through SQLAlchemy's execute path; the profile (docs/performance.md) put most of a
worker's CPU there. Here the connection comes from the same engine and pool (so the same
pre-ping, recycling and limits), the statements are plain SQL strings written once, and psycopg's
pipeline mode sends them without waiting for each answer: BEGIN goes with the first statement,
COMMIT with the last, and only a result that is read (`fetchone`) waits for the server. A single
statement goes alone in autocommit mode (`one_statement`): one round trip.

An error raised by the server surfaces at the next read or at the end of the block, and the
transaction is then rolled back, as with a session. Errors are psycopg's own (no SQLAlchemy
wrapper): `psycopg.errors.UniqueViolation` and the like.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any

import psycopg
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker


def engine_of(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    engine = sessions.kw.get("bind")
    if not isinstance(engine, AsyncEngine):
        raise TypeError("the sessionmaker is not bound to an AsyncEngine")
    return engine


@asynccontextmanager
async def _driver(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[tuple[AsyncConnection, psycopg.AsyncConnection[Any]]]:
    """A connection of the sessions' pool (checked out, pinged) and the psycopg one under it."""
    async with engine_of(sessions).connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, psycopg.AsyncConnection)
        yield connection, driver


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A psycopg connection of the sessions' pool, in pipeline mode, inside one transaction:
    committed when the block ends, rolled back if it raises.

    Neither psycopg's `transaction()` block (in pipeline mode it waits for the server at its
    start and twice at its end) nor the connection's implicit transaction: psycopg sends that
    BEGIN on its own and waits for it before the first statement, in a pipeline too (libpq's
    trace shows the Sync). So the block runs in autocommit mode, where psycopg adds nothing, with
    a BEGIN queued before the first statement and a COMMIT after the last: the pipeline's end is
    the only wait. The connection goes back to the pool out of autocommit mode, as it came."""
    async with _driver(sessions) as (connection, driver):
        await driver.set_autocommit(True)
        try:
            async with driver.pipeline():
                await driver.execute("BEGIN")
                yield driver
                await driver.execute("COMMIT")
        except BaseException:
            # after a failed COMMIT there is no transaction left: PostgreSQL only warns
            with suppress(Exception):
                await driver.execute("ROLLBACK")
            raise
        finally:
            try:
                await driver.set_autocommit(False)
            except Exception:  # broken, or interrupted mid-statement: never back into the pool
                await connection.invalidate()


async def one_statement(
    sessions: async_sessionmaker[AsyncSession],
    sql: str,
    args: dict[str, Any] | tuple[Any, ...],
) -> list[tuple[Any, ...]]:
    """One statement that returns rows, in a transaction of its own (autocommit: a statement
    is atomic on its own) and one round trip; its rows, once it has committed."""
    async with _driver(sessions) as (connection, driver):
        await driver.set_autocommit(True)
        try:
            return await (await driver.execute(sql, args)).fetchall()
        finally:
            try:
                await driver.set_autocommit(False)
            except Exception:  # interrupted mid-statement: never back into the pool like this
                await connection.invalidate()


@cache
def insert_all(tables: tuple[tuple[Table, tuple[str, ...]], ...]) -> str:
    """One statement that writes rows into several tables: one `INSERT … ON CONFLICT (primary
    key) DO NOTHING` per table (the retry-safe write), each a data-modifying CTE reading its rows
    from a JSON array parameter (`t0`, `t1`, … in the order given; see `json_rows`). Foreign keys
    are checked at the end of the statement, so the order of the tables does not matter. Built
    once per set of tables and columns; the statement's text does not depend on the row counts.

    A column left out gets its server default; one with a Python-side default in the model
    (SQLAlchemy would fill it in) must be given, so that both paths write the same row."""
    parts = []
    for n, (table, columns) in enumerate(tables):
        for column in table.columns:
            if (
                column.name not in columns
                and column.default is not None
                and not (
                    column.default.is_scalar and column.default.arg is None  # type: ignore[attr-defined]
                )
            ):
                raise ValueError(f"{table.fullname}.{column.name} has a default: give it explicitly")
        pk = ", ".join(c.name for c in table.primary_key.columns)
        names = ", ".join(columns)
        parts.append(
            f"INSERT INTO {table.fullname} ({names}) SELECT {names}"
            f" FROM jsonb_populate_recordset(NULL::{table.fullname}, CAST(%(t{n})s AS jsonb))"
            f" ON CONFLICT ({pk}) DO NOTHING"
        )
    *ctes, last = parts
    if not ctes:
        return last
    return "WITH " + ", ".join(f"i{n} AS ({cte})" for n, cte in enumerate(ctes)) + " " + last


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"not JSON: {type(value).__name__}")


def json_rows(rows: list[dict[str, Any]]) -> str:
    """Rows as the JSON array `insert_all` reads (JSONB columns nested as they are)."""
    return json.dumps(rows, default=_json_value, separators=(",", ":"))
