"""The normalized form of one requested location, as stored in `job_locations.input`.

The API produces it (after validation, with country as alpha-3, coordinates as 6-decimal strings,
a timezone always set and template chargers expanded); the first activity of a child reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from contracts.payloads import JobCounts
from contracts.vocabulary import JobStatus
from db.models import JobLocation

COPY_CHUNK = 1000  # job_locations rows per COPY message


def batched(rows: Iterable[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    """`itertools.batched` (Python 3.12) for 3.11."""
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


class NormalizedCharger(BaseModel):
    identity: str
    vendor: str
    model: str
    ocpp_version: str
    connector_type: str
    max_power_kw: float
    evses: int = Field(ge=1)
    capabilities: list[str] = Field(default_factory=list)


class NormalizedLocation(BaseModel):
    name: str
    address: str
    city: str
    postal_code: str | None = None
    state: str | None = None
    country: str = Field(description="ISO-3166 alpha-3, as OCPI stores it")
    latitude: str
    longitude: str
    time_zone: str
    publish: bool = True
    owner_name: str | None = None
    parking_type: str | None = None
    facilities: list[str] | None = None
    twentyfourseven: bool | None = None
    template: str | None = None
    chargers: list[NormalizedCharger] = Field(default_factory=list)


async def copy_job_locations(
    session: AsyncSession, job_id: str, inputs: Iterable[str], state: str, at: datetime
) -> int:
    """One `job_locations` row per input (already JSON), through COPY in the session's transaction.

    COPY instead of INSERT: a 10,000-location job is 10,000 JSONB rows written before the 202,
    and row-by-row INSERT parameters cost ~1 s of that; COPY streams them in a tenth.
    """
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection  # psycopg's AsyncConnection, inside the session's transaction
    assert driver is not None
    # COPY's text format: tab-separated, backslash escaped. JSON has no raw tab or newline (it
    # escapes them), so doubling its backslashes is the only escaping needed.
    stamp = at.isoformat()
    written = 0
    async with (
        driver.cursor() as cursor,
        cursor.copy("COPY ocpp.job_locations (job_id, index, input, state, updated_at) FROM STDIN") as copy,
    ):
        # sent in chunks as they are built: PostgreSQL parses one chunk's JSONB on its own core
        # while this process builds the next
        for chunk in batched(enumerate(inputs), COPY_CHUNK):
            lines = [
                f"{job_id}\t{index}\t{payload.replace(chr(92), chr(92) * 2)}\t{state}\t{stamp}\n"
                for index, payload in chunk
            ]
            await copy.write("".join(lines).encode())
            written += len(lines)
    return written


async def count_by_state(session: AsyncSession, job_id: str) -> JobCounts:
    """The job's locations by state (an index on (job_id, state) keeps it cheap at any size)."""
    rows = await session.execute(
        select(col(JobLocation.state), func.count())
        .where(col(JobLocation.job_id) == job_id)
        .group_by(col(JobLocation.state))
    )
    counts = {JobStatus(state): int(n) for state, n in rows.all()}
    return JobCounts(
        ready=counts.get(JobStatus.READY, 0),
        failed=counts.get(JobStatus.FAILED, 0),
        cancelled=counts.get(JobStatus.CANCELLED, 0),
        pending=counts.get(JobStatus.PENDING, 0),
        provisioning=counts.get(JobStatus.PROVISIONING, 0),
    )
