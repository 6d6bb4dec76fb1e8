"""Activities behind PATCH and DELETE of one location."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from contracts import activities as interfaces
from contracts.payloads import LocationPatch, LocationRef
from contracts.vocabulary import DeploymentState, ErrorCode, LocationStatus
from db.models import ChargerDeployment, OcpiLocation, OcppLocation, utcnow

# The OCPI columns a PATCH may change (what api/location_changes.py produces)
PATCHABLE = frozenset({
    "name", "address", "city", "postal_code", "state", "country", "latitude", "longitude",
    "time_zone", "publish", "owner_name", "parking_type", "facilities",
})
# OCPI columns that the OCPP site mirrors
MIRRORED = {"name": "name", "time_zone": "timezone", "owner_name": "owner_name"}


class LocationChangeActivities(interfaces.LocationChanges):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @activity.defn
    async def mark_location_decommissioning(self, ref: LocationRef) -> list[str] | None:
        """Hide the location from reads and return its deployments; None when it is gone (or
        already REMOVED)."""
        async with self.sessions() as session, session.begin():
            found = await session.execute(
                update(OcpiLocation)
                .where(col(OcpiLocation.id) == ref.location_id, col(OcpiLocation.network_id) == ref.cpo_id,
                       col(OcpiLocation.status) != LocationStatus.REMOVED)
                .values(status=LocationStatus.DECOMMISSIONING, last_updated=utcnow())
                .returning(col(OcpiLocation.id))
            )
            if found.scalar_one_or_none() is None:
                return None
            deployments = await session.execute(
                select(col(ChargerDeployment.id))
                .where(col(ChargerDeployment.ocpi_location_id) == ref.location_id)
                .order_by(col(ChargerDeployment.id))
            )
            await session.execute(
                update(ChargerDeployment)
                .where(col(ChargerDeployment.ocpi_location_id) == ref.location_id)
                .values(state=DeploymentState.STOPPING, updated_at=utcnow())
            )
            return list(deployments.scalars())

    @activity.defn
    async def update_location_fields(self, patch: LocationPatch) -> bool:
        """Only the fields sent; OCPI's last_updated moves with them (and with nothing else).
        Only the columns a PATCH may change: a workflow input is not trusted to name columns."""
        unknown = sorted(set(patch.fields) - PATCHABLE)
        if unknown:
            raise ApplicationError(f"PATCH names columns it may not change: {unknown}",
                                   type=ErrorCode.INVALID_LOCATION.value, non_retryable=True)
        now = utcnow()
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(OcpiLocation)
                .where(col(OcpiLocation.id) == patch.location_id,
                       col(OcpiLocation.network_id) == patch.cpo_id)
                .values(**patch.fields, last_updated=now)
                .returning(col(OcpiLocation.id))
            )
            if result.scalar_one_or_none() is None:
                return False
            mirrored = {MIRRORED[k]: v for k, v in patch.fields.items() if k in MIRRORED}
            if mirrored:
                await session.execute(
                    update(OcppLocation)
                    .where(col(OcppLocation.ocpi_location_id) == patch.location_id)
                    .values(**mirrored, updated_at=now)
                )
        return True
