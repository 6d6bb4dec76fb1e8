"""OCPI activities: retire a removed location, fan a change out to the CPO's eMSPs, and push a
location to one eMSP's Locations Receiver. Each is idempotent: a retried push sends the same
object again (PUT replaces, PATCH sets the same values)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from contracts.ocpi import (
    REJECTED,
    LocationChange,
    OcpiActivities,
    PushInput,
    PushResult,
    PushTarget,
)
from contracts.vocabulary import EvseStatus, LocationStatus
from db.models import OcpiEvse, OcpiLocation, OcpiPartner, OcppLocation, PartnerOperation, utcnow
from db.ocpi_wire import evses_of, location_object, patch_object, token_header, version_of
from settings import Settings
from workflows.ocpi_push import OcpiLocationPush


def receiver_url(partner: OcpiPartner) -> str | None:
    for endpoint in partner.endpoints or []:
        if endpoint.get("identifier") == "locations" and endpoint.get("role") == "RECEIVER":
            return str(endpoint["url"]).rstrip("/")
    return None


def push_workflow_id(partner_id: int, location_id: str) -> str:
    return f"ocpi-push/{partner_id}/{location_id}"


class OcpiPushActivities(OcpiActivities):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: Settings, client: Client
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.client = client

    @activity.defn(name="ocpi_retire_location")
    async def retire_location(self, location_id: str) -> bool:
        """OCPI never deletes: the location and its EVSEs become REMOVED (last_updated moves) and
        stay for the eMSPs; the OCPP side of its stopped chargers goes (so their identities can
        be used again and no credential of a stopped charger lingers)."""
        now = utcnow()
        async with self.sessions() as session, session.begin():
            found = await session.execute(
                update(OcpiLocation)
                .where(col(OcpiLocation.id) == location_id,
                       col(OcpiLocation.status) != LocationStatus.REMOVED)
                .values(status=LocationStatus.REMOVED, last_updated=now).returning(col(OcpiLocation.id))
            )
            if found.scalar_one_or_none() is None:
                return False
            await session.execute(
                update(OcpiEvse).where(col(OcpiEvse.location_id) == location_id)
                .values(status=EvseStatus.REMOVED, last_updated=now)
            )
            # charge points, their connectors and credentials, topology, deployments, task rows
            await session.execute(
                delete(OcppLocation).where(col(OcppLocation.ocpi_location_id) == location_id))
        return True

    @activity.defn(name="ocpi_notify_partners")
    async def notify_partners(self, change: LocationChange) -> int:
        async with self.sessions() as session:
            loc = (await session.execute(
                select(col(OcpiLocation.last_updated)).where(col(OcpiLocation.id) == change.location_id)
            )).scalar_one_or_none()
            partners = (await session.execute(
                select(OcpiPartner).where(col(OcpiPartner.cpo_id) == change.cpo_id,
                                          col(OcpiPartner.status) == "REGISTERED")
            )).scalars().all()
        if loc is None:
            return 0
        signal = LocationChange(change.cpo_id, change.location_id, change.columns, version_of(loc))
        sent = 0
        for partner in partners:
            if receiver_url(partner) is None or partner.id is None:
                continue  # this eMSP only pulls
            await self.client.start_workflow(
                OcpiLocationPush.run,
                PushTarget(partner.id, change.cpo_id, change.location_id,
                           self.settings.ocpi_push_max_interval_seconds),
                id=push_workflow_id(partner.id, change.location_id), task_queue=self.settings.task_queue,
                start_signal="change", start_signal_args=[signal],
                static_summary=f"OCPI push of {change.location_id} to eMSP "
                               f"{partner.country_code}*{partner.party_id}",
            )
            sent += 1
        return sent

    @activity.defn(name="ocpi_push_location")
    async def push_location(self, inp: PushInput) -> PushResult:
        async with self.sessions() as session:
            partner = await session.get(OcpiPartner, inp.partner_id)
            url = receiver_url(partner) if partner is not None else None
            if partner is None or partner.status != "REGISTERED" or not partner.their_token or url is None:
                return PushResult(outcome="GONE")
            cpo = await session.get(PartnerOperation, partner.cpo_id)
            loc = (await session.execute(
                select(OcpiLocation).where(col(OcpiLocation.id) == inp.location_id,
                                           col(OcpiLocation.network_id) == partner.cpo_id)
            )).scalar_one_or_none()
            if loc is None or cpo is None:
                return PushResult(outcome="GONE")
            version = version_of(loc.last_updated)
            if inp.delivered and version <= inp.delivered:
                return PushResult(outcome="SUPERSEDED", version=version)
            body: dict[str, Any]
            if inp.columns:
                method, body = "PATCH", patch_object(loc, inp.columns)
            else:
                evses = await evses_of(session, [loc.id])
                method, body = "PUT", location_object(loc, evses.get(loc.id, []))
            target = f"{url}/{loc.country_code}/{loc.party_id}/{loc.id}"
            headers = {
                "Authorization": token_header(partner.their_token),
                "X-Request-ID": str(uuid.uuid4()), "X-Correlation-ID": str(uuid.uuid4()),
                "OCPI-from-country-code": cpo.country_code, "OCPI-from-party-id": cpo.party_id,
                "OCPI-to-country-code": partner.country_code or "",
                "OCPI-to-party-id": partner.party_id or "",
            }
        async with httpx.AsyncClient(timeout=self.settings.ocpi_http_timeout_seconds) as http:
            # a connection error propagates: Temporal retries it with backoff
            response = await http.request(method, target, json=body, headers=headers)
        status = response.status_code
        try:
            envelope = response.json()
        except ValueError:
            envelope = None
        code = envelope.get("status_code") if isinstance(envelope, dict) else None
        if status in (408, 425, 429) or status >= 500 or (isinstance(code, int) and code >= 3000):
            raise ApplicationError(f"{method} {target}: HTTP {status}, OCPI {code}; retrying")
        if 200 <= status < 300 and (code is None or (isinstance(code, int) and code < 2000)):
            return PushResult(outcome="DELIVERED", method=method, version=version)
        raise ApplicationError(
            f"{method} {target} refused: HTTP {status}, OCPI {code}: {response.text[:200]}",
            type=REJECTED, non_retryable=True)
