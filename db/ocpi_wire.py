"""OCPI 2.2.1 Location / EVSE / Connector objects built from the `ocpi_*` tables.

Shared by the API's Locations Sender interface and the push activities, so that what an eMSP
pulls and what it is pushed are the same bytes. Pure reads; no HTTP here.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from contracts.vocabulary import LocationStatus
from db.models import OcpiConnector, OcpiEvse, OcpiLocation
from db.ocpi_clock import pull_barrier

OWNER_NAME_MAX = 100  # BusinessDetails.name is string(100)

# What the Sender serves and pushes: a location is visible from its activation on (READY), and
# stays visible once removed (EVSEs REMOVED; OCPI never deletes). A location still provisioning
# is never shown, so one whose provisioning fails or is cancelled (and is deleted) was never seen
# by an eMSP: no ghost is left in any eMSP's copy.
VISIBLE = (LocationStatus.ACTIVE, LocationStatus.DECOMMISSIONING, LocationStatus.REMOVED)


def token_header(token: str) -> str:
    """`Authorization` as 2.2.1 sends it: `Token <base64 of the token>`."""
    return "Token " + base64.b64encode(token.encode()).decode()


def ocpi_datetime(value: datetime) -> str:
    """OCPI DateTime: UTC, `Z`, at most 25 characters (so milliseconds, not microseconds)."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def connector_object(row: OcpiConnector) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": row.id,
        "standard": row.standard,
        "format": row.format,
        "power_type": row.power_type,
        "max_voltage": row.max_voltage,
        "max_amperage": row.max_amperage,
    }
    if row.max_electric_power is not None:
        obj["max_electric_power"] = row.max_electric_power
    obj["last_updated"] = ocpi_datetime(row.last_updated)
    return obj


def evse_object(row: OcpiEvse, connectors: Sequence[OcpiConnector]) -> dict[str, Any]:
    obj: dict[str, Any] = {"uid": row.uid}
    if row.evse_id:
        obj["evse_id"] = row.evse_id
    obj["status"] = row.status
    if row.capabilities:  # only what the charger declared (db/catalog.py)
        obj["capabilities"] = list(row.capabilities)
    obj.update(
        connectors=[connector_object(c) for c in connectors],
        last_updated=ocpi_datetime(row.last_updated),
    )
    return obj


def location_fields(loc: OcpiLocation) -> dict[str, Any]:
    """Every Location field we hold, except `evses` (None where we have no value)."""
    owner = {"name": loc.owner_name[:OWNER_NAME_MAX]} if loc.owner_name else None
    return {
        "country_code": loc.country_code,
        "party_id": loc.party_id,
        "id": loc.id,
        "publish": loc.publish,
        "name": loc.name,
        "address": loc.address,
        "city": loc.city,
        "postal_code": loc.postal_code,
        "state": loc.state,
        "country": loc.country,
        "coordinates": {"latitude": loc.latitude, "longitude": loc.longitude},
        "parking_type": loc.parking_type,
        "facilities": loc.facilities,
        "time_zone": loc.time_zone,
        "owner": owner,
        "opening_times": {"twentyfourseven": True} if loc.twentyfourseven else None,
        "last_updated": ocpi_datetime(loc.last_updated),
    }


def location_object(loc: OcpiLocation, evses: list[dict[str, Any]]) -> dict[str, Any]:
    fields = location_fields(loc)
    last_updated = fields.pop("last_updated")
    obj = {k: v for k, v in fields.items() if v is not None}
    obj["evses"] = evses
    obj["last_updated"] = last_updated
    return obj


def patch_body(delivered: dict[str, Any], current: dict[str, Any]) -> dict[str, Any] | None:
    """The Location PATCH that turns `delivered` (what the eMSP was sent) into `current` (what
    the Sender serves): the top-level fields that differ, and last_updated. None when a PATCH
    cannot say it: a field was removed (a PATCH cannot clear one; 2.2.1 receivers may ignore a
    null) or the EVSEs changed (a list in a PATCH replaces the whole list on some receivers and
    is merged on others): then the whole object goes as a PUT."""
    if set(delivered) - set(current) or delivered.get("evses") != current.get("evses"):
        return None
    body = {k: v for k, v in current.items() if delivered.get(k) != v}
    body["last_updated"] = current["last_updated"]
    return body


async def evses_of(session: AsyncSession, location_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    if not location_ids:
        return {}
    evses = (
        (
            await session.execute(
                select(OcpiEvse)
                .where(col(OcpiEvse.location_id).in_(location_ids))
                .order_by(col(OcpiEvse.uid))
            )
        )
        .scalars()
        .all()
    )
    connectors: dict[str, list[OcpiConnector]] = defaultdict(list)
    if evses:
        rows = (
            (
                await session.execute(
                    select(OcpiConnector)
                    .where(col(OcpiConnector.evse_uid).in_([e.uid for e in evses]))
                    .order_by(col(OcpiConnector.evse_uid), col(OcpiConnector.id))
                )
            )
            .scalars()
            .all()
        )
        for c in rows:
            connectors[c.evse_uid].append(c)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in evses:
        out[e.location_id].append(evse_object(e, connectors[e.uid]))
    return out


async def get_location_row(session: AsyncSession, cpo_id: int, location_id: str) -> OcpiLocation | None:
    """A visible location of this CPO. `id` is a CiString: matched without regard to case (ours
    are stored lower-case, as generated, so the primary key still serves the look-up)."""
    return (
        await session.execute(
            select(OcpiLocation).where(
                col(OcpiLocation.id).in_({location_id, location_id.lower()}),
                col(OcpiLocation.network_id) == cpo_id,
                col(OcpiLocation.status).in_(VISIBLE),
            )
        )
    ).scalar_one_or_none()


async def location_by_id(session: AsyncSession, cpo_id: int, location_id: str) -> dict[str, Any] | None:
    """One location of this CPO in wire format, removed ones included (OCPI never deletes)."""
    loc = await get_location_row(session, cpo_id, location_id)
    if loc is None:
        return None
    evses = await evses_of(session, [loc.id])
    return location_object(loc, evses.get(loc.id, []))


async def location_page(
    session: AsyncSession,
    cpo_id: int,
    date_from: datetime | None,
    date_to: datetime | None,
    offset: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the CPO's locations, oldest first so offsets stay stable while new ones
    arrive; `date_from` inclusive and `date_to` exclusive on last_updated, as 2.2.1 says."""
    await pull_barrier(session, cpo_id)  # every change stamped before now has committed
    where = [col(OcpiLocation.network_id) == cpo_id, col(OcpiLocation.status).in_(VISIBLE)]
    if date_from is not None:
        where.append(col(OcpiLocation.last_updated) >= date_from)
    if date_to is not None:
        where.append(col(OcpiLocation.last_updated) < date_to)
    total = (await session.execute(select(func.count()).select_from(OcpiLocation).where(*where))).scalar_one()
    locs = (
        (
            await session.execute(
                select(OcpiLocation)
                .where(*where)
                .order_by(col(OcpiLocation.created_at), col(OcpiLocation.id))
                .offset(offset)
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    evses = await evses_of(session, [loc.id for loc in locs])
    return [location_object(loc, evses.get(loc.id, [])) for loc in locs], int(total)
