"""The rows of one location (tables 1-9 of the design), written, activated or deleted as one
transaction each. Keys come from `contracts.ids`, so a repeated run upserts the same rows."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import delete
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
from db import pipelined
from db.catalog import CONNECTOR_TYPES, max_amperage
from db.job_input import NormalizedLocation
from db.models import (
    ChargePoint,
    ChargePointConnector,
    ChargePointCredential,
    ChargerDeployment,
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


# write_location_rows: what the job holds for the location (its normalized input, as JSON text,
# and the CPO), then, after the nine `INSERT … ON CONFLICT DO NOTHING` (the retry-safe write, see
# db/pipelined.py), the job's row PROVISIONING
READ_INPUT = """
    SELECT jl.input::text, p.id, p.name, p.country_code, p.party_id
    FROM ocpp.job_locations jl
    JOIN ocpp.jobs j ON j.id = jl.job_id
    JOIN ocpp.partner_operations p ON p.id = j.cpo_id
    WHERE jl.job_id = %s AND jl.index = %s"""
MARK_PROVISIONING = """
    UPDATE ocpp.job_locations SET state = %s, location_id = %s, updated_at = %s
    WHERE job_id = %s AND index = %s AND state IN (%s, %s)"""

# activate_location: the location's deployments RUNNING and the job's row READY, and the row's
# state before (taken under its lock) with the job's creation and CPO; no row if the job is gone
ACTIVATE_JOB_ROW = """
    WITH deployments AS (
        UPDATE ocpp.charger_deployments SET state = %(running)s, updated_at = %(now)s
        WHERE ocpi_location_id = %(location_id)s
    )
    UPDATE ocpp.job_locations jl
    SET state = %(ready)s, location_id = %(location_id)s, charger_ids = %(charger_ids)s,
        error = NULL, updated_at = %(now)s
    FROM (SELECT job_id, index, state FROM ocpp.job_locations
          WHERE job_id = %(job_id)s AND index = %(index)s FOR UPDATE) AS old,
         ocpp.jobs j
    WHERE jl.job_id = old.job_id AND jl.index = old.index AND j.id = jl.job_id
    RETURNING old.state, j.created_at, j.cpo_id"""
PROVISIONING_NETWORK = "SELECT network_id FROM ocpp.ocpi_locations WHERE id = %s AND status = %s"
EVSES_AVAILABLE = "UPDATE ocpp.ocpi_evses SET status = %s, last_updated = %s WHERE location_id = %s"
LOCATION_ACTIVE = (
    "UPDATE ocpp.ocpi_locations SET status = %s, last_updated = %s, version = version + 1 WHERE id = %s"
)


class LocationRowsActivities(interfaces.LocationRows):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
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
        """Tables 1-9 of one location in one transaction, deployments PENDING: two round trips
        (the job's input and CPO with BEGIN; then one statement for the nine tables' inserts,
        the job row and COMMIT)."""
        try:
            async with pipelined.transaction(self.sessions) as conn:
                found = await (await conn.execute(READ_INPUT, (inp.job_id, inp.index))).fetchone()
                if found is None:
                    raise ApplicationError(
                        f"job {inp.job_id} has no location #{inp.index}",
                        type=ErrorCode.INVALID_LOCATION.value,
                        non_retryable=True,
                    )
                payload, cpo_id, cpo_name, country_code, party_id = found
                cpo = PartnerOperation(id=cpo_id, name=cpo_name, country_code=country_code, party_id=party_id)
                loc = NormalizedLocation.model_validate_json(payload)
                plan = self._plan(inp, loc)
                built = [
                    (model.__table__, rows)  # type: ignore[attr-defined]
                    for model, rows in self._rows(inp, loc, cpo, plan).items()
                    if rows
                ]
                await conn.execute(
                    pipelined.insert_all(tuple((table, tuple(rows[0])) for table, rows in built)),
                    {f"t{n}": pipelined.json_rows(rows) for n, (_, rows) in enumerate(built)},
                )
                await conn.execute(
                    MARK_PROVISIONING,
                    (
                        JobStatus.PROVISIONING.value,
                        plan.location_id,
                        utcnow(),
                        inp.job_id,
                        inp.index,
                        JobStatus.PENDING.value,
                        JobStatus.PROVISIONING.value,
                    ),
                )
        except psycopg.errors.UniqueViolation as err:
            if err.diag.constraint_name == "uq_charge_points_network_identity":
                raise ApplicationError(
                    "a charger identity of this location is already used in this CPO's network",
                    type=ErrorCode.CHARGER_IDENTITY_CONFLICT.value,
                    non_retryable=True,
                ) from err
            raise
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
            OcpiLocation: [
                dict(
                    id=location_id,
                    network_id=network,
                    country_code=cpo.country_code,
                    party_id=cpo.party_id,
                    publish=loc.publish,
                    name=loc.name,
                    address=loc.address,
                    city=loc.city,
                    postal_code=loc.postal_code,
                    state=loc.state,
                    country=loc.country,
                    latitude=loc.latitude,
                    longitude=loc.longitude,
                    time_zone=loc.time_zone,
                    parking_type=loc.parking_type,
                    facilities=loc.facilities,
                    owner_name=loc.owner_name,
                    twentyfourseven=loc.twentyfourseven,
                    status=LocationStatus.PROVISIONING,
                    job_id=inp.job_id,
                    job_index=inp.index,
                    version=1,
                    last_updated=now,
                    created_at=now,
                )
            ],
            OcppLocation: [
                dict(
                    id=ocpp_location_id,
                    ocpi_location_id=location_id,
                    network_id=network,
                    slug=slugify(loc.name, location_id[4:]),
                    name=loc.name,
                    timezone=loc.time_zone,
                    owner_name=loc.owner_name,
                    created_at=now,
                    updated_at=now,
                )
            ],
            OcpiEvse: [],
            OcpiConnector: [],
            ChargePoint: [],
            ChargePointConnector: [],
            ChargePointCredential: [],
            NetworkTopology: [],
            ChargerDeployment: [],
        }
        for n, (charger, planned) in enumerate(zip(loc.chargers, plan.chargers, strict=True)):
            spec = CONNECTOR_TYPES[charger.connector_type]
            rows[ChargePoint].append(
                dict(
                    id=planned.charge_point_id,
                    location_id=ocpp_location_id,
                    network_id=network,
                    position=n,
                    identity=charger.identity,
                    vendor=charger.vendor[:20],
                    model=charger.model[:20],
                    ocpp_version=charger.ocpp_version,
                    connector_type=charger.connector_type,
                    max_power_kw=charger.max_power_kw,
                    csms_url=self.settings.csms_url,
                    created_at=now,
                )
            )
            secret = charger_secret(self.settings.charger_secret_key, planned.deployment_id)
            rows[ChargePointCredential].append(
                dict(
                    charge_point_id=planned.charge_point_id,
                    username=charger.identity,
                    secret_hash=sha256_hex(secret),
                    security_profile=1,
                    created_at=now,
                )
            )
            rows[ChargerDeployment].append(
                dict(
                    id=planned.deployment_id,
                    charge_point_id=planned.charge_point_id,
                    ocpi_location_id=location_id,
                    image=self.settings.charger_image,
                    desired_config={
                        "identity": charger.identity,
                        "ocpp_version": charger.ocpp_version,
                        "csms_url": self.settings.csms_url,
                        "connectors": charger.evses,
                        "task_definition": self.settings.ecs_task_definition,
                    },
                    state=DeploymentState.PENDING,
                    created_at=now,
                    updated_at=now,
                )
            )
            for e in range(charger.evses):
                uid = ids.evse_uid(inp.job_id, inp.index, n, e)
                rows[OcpiEvse].append(
                    dict(
                        uid=uid,
                        location_id=location_id,
                        status=EvseStatus.PLANNED,
                        last_updated=now,
                        capabilities=list(charger.capabilities) or None,
                        evse_id=f"{cpo.country_code}*{cpo.party_id}*E{uid[4:16].upper()}",
                    )
                )
                rows[OcpiConnector].append(
                    dict(
                        evse_uid=uid,
                        id="1",
                        standard=spec.standard,
                        format=spec.format,
                        power_type=spec.power_type,
                        max_voltage=spec.max_voltage,
                        max_amperage=max_amperage(spec, charger.max_power_kw / charger.evses),
                        max_electric_power=int(charger.max_power_kw * 1000 / charger.evses),
                        last_updated=now,
                    )
                )
                rows[ChargePointConnector].append(
                    dict(
                        charge_point_id=planned.charge_point_id,
                        connector_id=e + 1,
                        connector_type=charger.connector_type,
                        max_power_kw=charger.max_power_kw / charger.evses,
                        status="Unavailable",
                    )
                )
                rows[NetworkTopology].append(
                    dict(
                        id=ids.topology_id(inp.job_id, inp.index, n, e),
                        network_id=network,
                        ocpi_location_id=location_id,
                        ocpp_location_id=ocpp_location_id,
                        charge_point_id=planned.charge_point_id,
                        connector_id=e + 1,
                        evse_uid=uid,
                        ocpi_connector_id="1",
                    )
                )
        return rows

    @activity.defn
    async def activate_location(self, inp: ActivateInput) -> None:
        """Deployments RUNNING, EVSEs AVAILABLE, location ACTIVE and the job row READY: together,
        in three round trips (BEGIN, the job row and the location's state; the stamp; the two
        visible UPDATEs with COMMIT)."""
        now = utcnow()
        async with pipelined.transaction(self.sessions) as conn:
            # the deployments RUNNING and the job's row READY, in one statement; the row's state
            # before (locked first), and the job's creation: the READY metrics count a location
            # once (a replayed local activity runs again) and time it from the POST
            job_row = await conn.execute(
                ACTIVATE_JOB_ROW,
                {
                    "job_id": inp.job_id,
                    "index": inp.index,
                    "location_id": inp.location_id,
                    "running": DeploymentState.RUNNING.value,
                    "ready": JobStatus.READY.value,
                    "charger_ids": Jsonb(inp.charger_ids),
                    "now": now,
                },
            )
            # Visible to the eMSPs from here on (the Sender serves ACTIVE, not PROVISIONING), so
            # stamped last, with the commit's clock. A replayed activation changes nothing. Read
            # in a statement of its own, after the one that locks the job's row: a concurrent
            # replay that held the lock has committed ACTIVE by the time this one starts. Sent
            # with it, without waiting for its answer (one round trip for both).
            found = await (
                await conn.execute(PROVISIONING_NETWORK, (inp.location_id, LocationStatus.PROVISIONING.value))
            ).fetchone()
            before = await job_row.fetchone()
            if found is not None:
                stamp = await stamp_visible_change(conn, int(found[0]))
                await conn.execute(EVSES_AVAILABLE, (EvseStatus.AVAILABLE.value, stamp, inp.location_id))
                await conn.execute(LOCATION_ACTIVE, (LocationStatus.ACTIVE.value, stamp, inp.location_id))
        if before is not None and before[0] != JobStatus.READY:
            metrics.location_ready(now - before[1])
        activity.logger.info("location %s ready with %d charger(s)", inp.location_id, len(inp.charger_ids))
        if self.on_ready is not None and before is not None:
            try:
                await self.on_ready(LocationChange(cpo_id=int(before[2]), location_id=inp.location_id))
            except Exception:  # READY is committed; an eMSP that misses this push sees it on its pull
                activity.logger.warning("OCPI notify of %s not sent", inp.location_id, exc_info=True)

    @activity.defn
    async def delete_location_rows(self, location_id: str) -> int:
        """All ten tables go with the OCPI location (ON DELETE CASCADE). Returns rows deleted (0/1)."""
        async with self.sessions() as session, session.begin():
            result = await session.execute(delete(OcpiLocation).where(col(OcpiLocation.id) == location_id))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
