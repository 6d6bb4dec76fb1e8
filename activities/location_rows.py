"""The rows of one location (tables 1-9 of the design), written, activated or deleted as one
transaction each. Keys come from `contracts.ids`, so a repeated run upserts the same rows."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import SQLModel, col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import metrics
from activities.credentials import charger_secret
from contracts import activities as interfaces
from contracts import ids
from contracts.ids import sha256_hex
from contracts.ocpi import LocationChange
from contracts.payloads import ActivateInput, ChargerPlan, LocationPlan, ProvisionInput
from contracts.vocabulary import DeploymentState, ErrorCode, EvseStatus, JobStatus, LocationStatus
from db.catalog import CONNECTOR_TYPES, max_amperage
from db.job_input import NormalizedLocation
from db.models import (
    ChargePoint,
    ChargePointConnector,
    ChargePointCredential,
    ChargerDeployment,
    Job,
    JobLocation,
    NetworkTopology,
    OcpiConnector,
    OcpiEvse,
    OcpiLocation,
    OcppLocation,
    PartnerOperation,
    utcnow,
)
from db.ocpi_clock import stamp_visible_change
from settings import Settings


def slugify(name: str, location_hex: str) -> str:
    """A readable slug, unique by construction: the name's ASCII letters and digits (a name in
    another script has none: `location`) and the location id's 32 hex digits. A shorter suffix
    collided (two non-Latin names), and the unique key then failed the location for good."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:47].strip("-") or "location"
    return f"{base}-{location_hex}"  # <= 80 characters


async def _insert_ignore(session: AsyncSession, model: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT DO NOTHING on the primary key: the retry-safe write.

    Rows go as executemany parameters, not inlined VALUES: the statement then compiles once per
    table for the whole worker (SQLAlchemy's cache) instead of once per location.
    """
    if rows:
        table = model.__table__  # type: ignore[attr-defined]
        pk = [c.name for c in table.primary_key.columns]
        await session.execute(insert(table).on_conflict_do_nothing(index_elements=pk), rows)


class LocationRowsActivities(interfaces.LocationRows):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: Settings,
        on_ready: Callable[[LocationChange], Awaitable[int]] | None = None,
    ) -> None:
        """`on_ready`: told of each location once it is READY (the OCPI push to the CPO's
        eMSPs), from this activity, after its commit: a step of the workflow after activation
        would give a job cancel a moment to undo a location the client already saw READY."""
        self.on_ready = on_ready
        self.sessions = sessions
        self.settings = settings

    @activity.defn
    async def write_location_rows(self, inp: ProvisionInput) -> LocationPlan:
        """Tables 1-9 of one location in one transaction, deployments PENDING."""
        async with self.sessions() as session, session.begin():
            found = (
                await session.execute(
                    select(JobLocation, PartnerOperation)
                    .join(Job, col(Job.id) == col(JobLocation.job_id))
                    .join(PartnerOperation, col(PartnerOperation.id) == col(Job.cpo_id))
                    .where(col(JobLocation.job_id) == inp.job_id, col(JobLocation.index) == inp.index)
                )
            ).first()
            if found is None:
                raise ApplicationError(
                    f"job {inp.job_id} has no location #{inp.index}",
                    type=ErrorCode.INVALID_LOCATION.value, non_retryable=True,
                )
            job_location, cpo = found
            loc = NormalizedLocation.model_validate(job_location.input)
            plan = self._plan(inp, loc)
            rows = self._rows(inp, loc, cpo, plan)
            try:
                for model, model_rows in rows.items():
                    await _insert_ignore(session, model, model_rows)
            except IntegrityError as err:
                if "uq_charge_points_network_identity" in str(err.orig):
                    raise ApplicationError(
                        "a charger identity of this location is already used in this CPO's network",
                        type=ErrorCode.CHARGER_IDENTITY_CONFLICT.value, non_retryable=True,
                    ) from err
                raise
            await session.execute(
                update(JobLocation)
                .where(col(JobLocation.job_id) == inp.job_id, col(JobLocation.index) == inp.index)
                .where(col(JobLocation.state).in_([JobStatus.PENDING, JobStatus.PROVISIONING]))
                .values(state=JobStatus.PROVISIONING, location_id=plan.location_id, updated_at=utcnow())
            )
        return plan

    @staticmethod
    def _plan(inp: ProvisionInput, loc: NormalizedLocation) -> LocationPlan:
        return LocationPlan(
            location_id=ids.location_id(inp.job_id, inp.index),
            chargers=[
                ChargerPlan(
                    deployment_id=ids.deployment_id(inp.job_id, inp.index, n),
                    charge_point_id=ids.charge_point_id(inp.job_id, inp.index, n),
                    identity=charger.identity,
                )
                for n, charger in enumerate(loc.chargers)
            ],
        )

    def _rows(
        self, inp: ProvisionInput, loc: NormalizedLocation, cpo: PartnerOperation, plan: LocationPlan
    ) -> dict[type[SQLModel], list[dict[str, Any]]]:
        """Every row of the location, keyed by table, parents before children."""
        now = utcnow()
        network = cpo.id
        location_id = plan.location_id
        ocpp_location_id = ids.ocpp_location_id(inp.job_id, inp.index)
        rows: dict[type[SQLModel], list[dict[str, Any]]] = {
            OcpiLocation: [dict(
                id=location_id, network_id=network, country_code=cpo.country_code,
                party_id=cpo.party_id, publish=loc.publish, name=loc.name, address=loc.address,
                city=loc.city, postal_code=loc.postal_code, state=loc.state, country=loc.country,
                latitude=loc.latitude, longitude=loc.longitude, time_zone=loc.time_zone,
                parking_type=loc.parking_type, facilities=loc.facilities, owner_name=loc.owner_name,
                twentyfourseven=loc.twentyfourseven, status=LocationStatus.PROVISIONING,
                job_id=inp.job_id, job_index=inp.index,
                last_updated=now, created_at=now,
            )],
            OcppLocation: [dict(
                id=ocpp_location_id, ocpi_location_id=location_id, network_id=network,
                slug=slugify(loc.name, location_id[4:]), name=loc.name, timezone=loc.time_zone,
                owner_name=loc.owner_name, created_at=now, updated_at=now,
            )],
            OcpiEvse: [], OcpiConnector: [], ChargePoint: [], ChargePointConnector: [],
            ChargePointCredential: [], NetworkTopology: [], ChargerDeployment: [],
        }
        for n, (charger, planned) in enumerate(zip(loc.chargers, plan.chargers, strict=True)):
            spec = CONNECTOR_TYPES[charger.connector_type]
            rows[ChargePoint].append(dict(
                id=planned.charge_point_id, location_id=ocpp_location_id, network_id=network,
                position=n, identity=charger.identity, vendor=charger.vendor[:20],
                model=charger.model[:20], ocpp_version=charger.ocpp_version,
                connector_type=charger.connector_type, max_power_kw=charger.max_power_kw,
                csms_url=self.settings.csms_url, created_at=now,
            ))
            secret = charger_secret(self.settings.charger_secret_key, planned.deployment_id)
            rows[ChargePointCredential].append(dict(
                charge_point_id=planned.charge_point_id, username=charger.identity,
                secret_hash=sha256_hex(secret), security_profile=1, created_at=now,
            ))
            rows[ChargerDeployment].append(dict(
                id=planned.deployment_id, charge_point_id=planned.charge_point_id,
                ocpi_location_id=location_id, image=self.settings.charger_image,
                desired_config={
                    "identity": charger.identity, "ocpp_version": charger.ocpp_version,
                    "csms_url": self.settings.csms_url, "connectors": charger.evses,
                    "task_definition": self.settings.ecs_task_definition,
                },
                state=DeploymentState.PENDING, created_at=now, updated_at=now,
            ))
            for e in range(charger.evses):
                uid = ids.evse_uid(inp.job_id, inp.index, n, e)
                rows[OcpiEvse].append(dict(
                    uid=uid, location_id=location_id, status=EvseStatus.PLANNED, last_updated=now,
                    capabilities=list(charger.capabilities) or None,
                    evse_id=f"{cpo.country_code}*{cpo.party_id}*E{uid[4:16].upper()}",
                ))
                rows[OcpiConnector].append(dict(
                    evse_uid=uid, id="1", standard=spec.standard, format=spec.format,
                    power_type=spec.power_type, max_voltage=spec.max_voltage,
                    max_amperage=max_amperage(spec, charger.max_power_kw / charger.evses),
                    max_electric_power=int(charger.max_power_kw * 1000 / charger.evses),
                    last_updated=now,
                ))
                rows[ChargePointConnector].append(dict(
                    charge_point_id=planned.charge_point_id, connector_id=e + 1,
                    connector_type=charger.connector_type,
                    max_power_kw=charger.max_power_kw / charger.evses, status="Unavailable",
                ))
                rows[NetworkTopology].append(dict(
                    id=ids.topology_id(inp.job_id, inp.index, n, e), network_id=network,
                    ocpi_location_id=location_id, ocpp_location_id=ocpp_location_id,
                    charge_point_id=planned.charge_point_id, connector_id=e + 1,
                    evse_uid=uid, ocpi_connector_id="1",
                ))
        return rows

    @activity.defn
    async def activate_location(self, inp: ActivateInput) -> None:
        """Deployments RUNNING, EVSEs AVAILABLE, location ACTIVE and the job row READY: together."""
        now = utcnow()
        async with self.sessions() as session, session.begin():
            # the row's state before, and the job's creation: the READY metrics count a location
            # once (a replayed local activity runs again) and time it from the POST
            before = (
                await session.execute(
                    select(col(JobLocation.state), col(Job.created_at), col(Job.cpo_id))
                    .join(Job, col(Job.id) == col(JobLocation.job_id))
                    .where(col(JobLocation.job_id) == inp.job_id, col(JobLocation.index) == inp.index)
                    .with_for_update(of=JobLocation)
                )
            ).one_or_none()
            await session.execute(
                update(ChargerDeployment)
                .where(col(ChargerDeployment.ocpi_location_id) == inp.location_id)
                .values(state=DeploymentState.RUNNING, updated_at=now)
            )
            await session.execute(
                update(JobLocation)
                .where(col(JobLocation.job_id) == inp.job_id, col(JobLocation.index) == inp.index)
                .values(state=JobStatus.READY, location_id=inp.location_id,
                        charger_ids=inp.charger_ids, error=None, updated_at=now)
            )
            # Visible to the eMSPs from here on (the Sender serves ACTIVE, not PROVISIONING), so
            # stamped last, with the commit's clock. A replayed activation changes nothing.
            network = (await session.execute(
                select(col(OcpiLocation.network_id)).where(
                    col(OcpiLocation.id) == inp.location_id,
                    col(OcpiLocation.status) == LocationStatus.PROVISIONING)
            )).scalar_one_or_none()
            if network is not None:
                stamp = await stamp_visible_change(session, network)
                await session.execute(
                    update(OcpiEvse)
                    .where(col(OcpiEvse.location_id) == inp.location_id)
                    .values(status=EvseStatus.AVAILABLE, last_updated=stamp)
                )
                await session.execute(
                    update(OcpiLocation)
                    .where(col(OcpiLocation.id) == inp.location_id)
                    .values(status=LocationStatus.ACTIVE, last_updated=stamp,
                            version=col(OcpiLocation.version) + 1)
                )
        if before is not None and before.state != JobStatus.READY:
            metrics.location_ready(now - before.created_at)
        activity.logger.info("location %s ready with %d charger(s)", inp.location_id, len(inp.charger_ids))
        if self.on_ready is not None and before is not None:
            try:
                await self.on_ready(LocationChange(cpo_id=int(before.cpo_id), location_id=inp.location_id))
            except Exception:  # READY is committed; an eMSP that misses this push sees it on its pull
                activity.logger.warning("OCPI notify of %s not sent", inp.location_id, exc_info=True)

    @activity.defn
    async def delete_location_rows(self, location_id: str) -> int:
        """All ten tables go with the OCPI location (ON DELETE CASCADE). Returns rows deleted (0/1)."""
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                delete(OcpiLocation).where(col(OcpiLocation.id) == location_id)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
