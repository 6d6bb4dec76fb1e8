"""Activities behind PATCH and DELETE of one location."""

from __future__ import annotations

from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from contracts import activities as interfaces
from contracts.payloads import LocationPatch, LocationRef
from contracts.vocabulary import DeploymentState, ErrorCode, LocationStatus
from db.models import ChargerDeployment, OcpiLocation, OcppLocation, utcnow
from db.ocpi_clock import stamp_visible_change

# The OCPI columns a PATCH may change (what api/location_changes.py produces)
PATCHABLE = frozenset(
    {
        "name",
        "address",
        "city",
        "postal_code",
        "state",
        "country",
        "latitude",
        "longitude",
        "time_zone",
        "publish",
        "owner_name",
        "parking_type",
        "facilities",
        "twentyfourseven",
    }
)
# A location on its way out, or out: a PATCH no longer applies to it
GONE = (LocationStatus.DECOMMISSIONING, LocationStatus.REMOVED)
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
                .where(
                    col(OcpiLocation.id) == ref.location_id,
                    col(OcpiLocation.network_id) == ref.cpo_id,
                    col(OcpiLocation.status) != LocationStatus.REMOVED,
                )
                # not visible to eMSPs (the wire has no location status): last_updated stays
                .values(status=LocationStatus.DECOMMISSIONING)
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
        """Only the fields sent; OCPI's last_updated becomes the commit's time and the version
        moves (db/ocpi_clock.py). False, changing nothing, when the location is gone (or going).
        The workflow hands changes over one at a time in arrival order; the transaction is held
        to a fraction of the attempt's timeout, so an attempt Temporal gave up on cannot commit
        after the next change. Only the columns a PATCH may change: a workflow input is not
        trusted to name columns."""
        unknown = sorted(set(patch.fields) - PATCHABLE)
        if unknown:
            raise ApplicationError(
                f"PATCH names columns it may not change: {unknown}",
                type=ErrorCode.INVALID_LOCATION.value,
                non_retryable=True,
            )
        try:
            async with self.sessions() as session, session.begin():
                await bound_transaction(session)
                network = (
                    await session.execute(
                        select(col(OcpiLocation.network_id))
                        .where(
                            col(OcpiLocation.id) == patch.location_id,
                            col(OcpiLocation.network_id) == patch.cpo_id,
                            col(OcpiLocation.status).not_in(GONE),
                        )
                        .with_for_update()
                    )
                ).scalar_one_or_none()
                if network is None:
                    return False
                mirrored = {MIRRORED[k]: v for k, v in patch.fields.items() if k in MIRRORED}
                if mirrored:
                    await session.execute(
                        update(OcppLocation)
                        .where(col(OcppLocation.ocpi_location_id) == patch.location_id)
                        .values(**mirrored, updated_at=utcnow())
                    )
                stamp = await stamp_visible_change(session, network)
                await session.execute(
                    update(OcpiLocation)
                    .where(col(OcpiLocation.id) == patch.location_id)
                    .values(**patch.fields, last_updated=stamp, version=col(OcpiLocation.version) + 1)
                )
        except DBAPIError as err:
            # a value the table refuses is refused again on every retry: that change is dropped
            # (the API validates, so this is a bug to see in the log); anything else is retried
            sqlstate = str(getattr(err.orig, "sqlstate", None) or "")
            if sqlstate[:2] in ("22", "23"):  # data exception, integrity constraint violation
                raise ApplicationError(
                    f"PATCH refused by the database: {err.orig}",
                    type=ErrorCode.INVALID_LOCATION.value,
                    non_retryable=True,
                ) from err
            raise
        return True


async def bound_transaction(session: AsyncSession) -> None:
    """Every statement of this transaction (lock waits included) ends within a quarter of the
    activity attempt's timeout: a transaction that outlived its attempt could commit after the
    retry and the changes that follow it."""
    try:
        timeout = activity.info().start_to_close_timeout
    except RuntimeError:  # called outside an activity (a test)
        timeout = None
    seconds = timeout.total_seconds() if timeout else 60.0
    millis = max(int(seconds * 250), 100)
    await session.execute(text(f"SET LOCAL statement_timeout = {millis}"))
