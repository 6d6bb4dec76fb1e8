"""Reads of locations with their chargers, shaped for the API."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.schemas import ChargerOut, CoordinatesOut, LocationOut, country_alpha2
from contracts.vocabulary import LocationStatus
from db.models import ChargePoint, ChargerDeployment, OcpiLocation, OcppLocation


async def chargers_of(session: AsyncSession, location_ids: Sequence[str]) -> dict[str, list[ChargerOut]]:
    rows = await session.execute(
        select(
            col(ChargerDeployment.ocpi_location_id),
            col(ChargerDeployment.id),
            col(ChargerDeployment.state),
            col(ChargePoint.identity),
            col(ChargePoint.connector_type),
            col(ChargePoint.ocpp_version),
        )
        .join(ChargePoint, col(ChargePoint.id) == col(ChargerDeployment.charge_point_id))
        .where(col(ChargerDeployment.ocpi_location_id).in_(location_ids))
        .order_by(col(ChargerDeployment.ocpi_location_id), col(ChargePoint.position))
    )
    chargers: dict[str, list[ChargerOut]] = defaultdict(list)
    for location_id, dep_id, state, identity, connector_type, ocpp_version in rows.all():
        chargers[location_id].append(
            ChargerOut(
                id=dep_id,
                identity=identity,
                connector_type=connector_type,
                ocpp_version=ocpp_version,
                status=state,
            )
        )
    return chargers


def location_out(loc: OcpiLocation, ocpp: OcppLocation | None, chargers: list[ChargerOut]) -> LocationOut:
    return LocationOut(
        id=loc.id,
        ocpp_location_id=ocpp.id if ocpp else None,
        slug=ocpp.slug if ocpp else None,
        name=loc.name,
        address=loc.address,
        city=loc.city,
        postal_code=loc.postal_code,
        state=loc.state,
        country=country_alpha2(loc.country),
        coordinates=CoordinatesOut(latitude=float(loc.latitude), longitude=float(loc.longitude)),
        timezone=loc.time_zone,
        owner_name=loc.owner_name,
        public=loc.publish,
        twentyfourseven=loc.twentyfourseven,
        status=loc.status,
        chargers=chargers,
        created_at=loc.created_at,
        updated_at=loc.last_updated,
    )


# On its way out, or out (kept as REMOVED for the eMSPs only): the OCPPLAB reads answer 404.
HIDDEN = (LocationStatus.DECOMMISSIONING, LocationStatus.REMOVED)


def _visible(cpo_id: int) -> Any:
    return (col(OcpiLocation.network_id) == cpo_id) & col(OcpiLocation.status).not_in(HIDDEN)


async def get_location(session: AsyncSession, cpo_id: int, location_id: str) -> LocationOut | None:
    row = (
        await session.execute(
            select(OcpiLocation, OcppLocation)
            .outerjoin(OcppLocation, col(OcppLocation.ocpi_location_id) == col(OcpiLocation.id))
            .where(col(OcpiLocation.id) == location_id, _visible(cpo_id))
        )
    ).first()
    if row is None:
        return None
    loc, ocpp = row
    chargers = await chargers_of(session, [loc.id])
    return location_out(loc, ocpp, chargers.get(loc.id, []))


async def location_status(session: AsyncSession, cpo_id: int, location_id: str) -> str | None:
    return (
        await session.execute(
            select(col(OcpiLocation.status)).where(
                col(OcpiLocation.id) == location_id, col(OcpiLocation.network_id) == cpo_id
            )
        )
    ).scalar_one_or_none()


async def list_page(
    session: AsyncSession, cpo_id: int, page: int, limit: int
) -> tuple[list[LocationOut], int]:
    total = (
        await session.execute(select(func.count()).select_from(OcpiLocation).where(_visible(cpo_id)))
    ).scalar_one()
    rows = (
        await session.execute(
            select(OcpiLocation, OcppLocation)
            .outerjoin(OcppLocation, col(OcppLocation.ocpi_location_id) == col(OcpiLocation.id))
            .where(_visible(cpo_id))
            .order_by(col(OcpiLocation.created_at), col(OcpiLocation.id))
            .offset((page - 1) * limit)
            .limit(limit)
        )
    ).all()
    chargers = await chargers_of(session, [loc.id for loc, _ in rows])
    return [location_out(loc, ocpp, chargers.get(loc.id, [])) for loc, ocpp in rows], int(total)
