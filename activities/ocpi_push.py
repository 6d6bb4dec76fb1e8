"""OCPI activities: retire a removed location, fan a change out to the CPO's eMSPs, and push a
location to one eMSP's Locations Receiver. Each is idempotent: a retried push sends the same
object again (PUT replaces, PATCH sets the same values)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from contracts.egress import PeerUnusable, peer_request
from contracts.ocpi import (
    PATCH_REJECTED,
    REJECTED,
    LocationChange,
    OcpiActivities,
    PushInput,
    PushResult,
    PushTarget,
    endpoint_url,
)
from contracts.vocabulary import EvseStatus, LocationStatus
from db import pipelined
from db.models import (
    OcpiDelivery,
    OcpiEvse,
    OcpiLocation,
    OcpiPartner,
    OcppLocation,
    PartnerOperation,
    utcnow,
)
from db.ocpi_clock import stamp_visible_change
from db.ocpi_wire import evses_of, get_location_row, location_object, patch_body, token_header
from settings import Settings
from workflows.ocpi_push import OcpiLocationPush

REGISTERED_PARTNERS = (
    "SELECT id, country_code, party_id, endpoints FROM ocpp.ocpi_partners WHERE cpo_id = %s AND status = %s"
)


def receiver_url(partner: OcpiPartner) -> str | None:
    return locations_receiver(partner.endpoints)


def locations_receiver(endpoints: list[dict[str, Any]] | None) -> str | None:
    """The eMSP's Locations Receiver URL among its endpoints, if it has one."""
    url = endpoint_url(endpoints, "locations", "RECEIVER")
    return url.rstrip("/") if url is not None else None


def push_workflow_id(partner_id: int, location_id: str) -> str:
    return f"ocpi-push/{partner_id}/{location_id}"


class OcpiPushActivities(OcpiActivities):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: Settings, client: Client
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.client = client
        self.policy = settings.egress_policy()
        self._per_emsp: dict[int, asyncio.Semaphore] = {}

    def _slot(self, partner_id: int) -> asyncio.Semaphore:
        """At most `ocpi_push_per_emsp` calls to one eMSP at once from this worker: one eMSP that
        hangs holds that many of the push slots, not all of them."""
        if partner_id not in self._per_emsp:
            self._per_emsp[partner_id] = asyncio.Semaphore(self.settings.ocpi_push_per_emsp)
        return self._per_emsp[partner_id]

    @activity.defn(name="ocpi_retire_location")
    async def retire_location(self, location_id: str) -> bool:
        """OCPI never deletes: the location and its EVSEs become REMOVED (last_updated moves) and
        stay for the eMSPs; the OCPP side of its stopped chargers goes (so their identities can
        be used again and no credential of a stopped charger lingers)."""
        async with self.sessions() as session, session.begin():
            network = (
                await session.execute(
                    select(col(OcpiLocation.network_id))
                    .where(
                        col(OcpiLocation.id) == location_id,
                        col(OcpiLocation.status) != LocationStatus.REMOVED,
                    )
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if network is None:
                return False
            # charge points, their connectors and credentials, topology, deployments, task rows
            await session.execute(
                delete(OcppLocation).where(col(OcppLocation.ocpi_location_id) == location_id)
            )
            stamp = await stamp_visible_change(session, network)
            await session.execute(
                update(OcpiEvse)
                .where(col(OcpiEvse.location_id) == location_id)
                .values(status=EvseStatus.REMOVED, last_updated=stamp)
            )
            await session.execute(
                update(OcpiLocation)
                .where(col(OcpiLocation.id) == location_id)
                .values(
                    status=LocationStatus.REMOVED, last_updated=stamp, version=col(OcpiLocation.version) + 1
                )
            )
        return True

    @activity.defn(name="ocpi_notify_partners")
    async def notify_partners(self, change: LocationChange) -> int:
        # told of every location that becomes READY (most CPOs have no eMSP to push to): one
        # round trip, no ORM objects
        partners = await pipelined.one_statement(
            self.sessions, REGISTERED_PARTNERS, (change.cpo_id, "REGISTERED")
        )
        signal = LocationChange(change.cpo_id, change.location_id)
        sent = 0
        for partner_id, country_code, party_id, endpoints in partners:
            if locations_receiver(endpoints) is None:
                continue  # this eMSP only pulls
            await self.client.start_workflow(
                OcpiLocationPush.run,
                PushTarget(
                    partner_id,
                    change.cpo_id,
                    change.location_id,
                    self.settings.ocpi_push_max_interval_seconds,
                    task_queue=self.settings.ocpi_push_task_queue,
                    attempt_timeout_seconds=self.settings.ocpi_push_attempt_timeout_seconds,
                ),
                id=push_workflow_id(partner_id, change.location_id),
                task_queue=self.settings.task_queue,
                start_signal="change",
                start_signal_args=[signal],
                static_summary=f"OCPI push of {change.location_id} to eMSP {country_code}*{party_id}",
            )
            sent += 1
        return sent

    @activity.defn(name="ocpi_push_location")
    async def push_location(self, inp: PushInput) -> PushResult:
        async with self.sessions() as session:
            partner = await session.get(OcpiPartner, inp.partner_id)
            url = receiver_url(partner) if partner is not None else None
            if (
                partner is None
                or partner.id is None
                or partner.status != "REGISTERED"
                or not partner.their_token
                or url is None
            ):
                return PushResult(outcome="GONE")
            cpo = await session.get(PartnerOperation, partner.cpo_id)
            loc = await get_location_row(session, partner.cpo_id, inp.location_id)
            if loc is None or cpo is None:
                exists = await session.get(OcpiLocation, inp.location_id)
                return PushResult(outcome="GONE" if exists is None else "NOT_VISIBLE")
            evses = await evses_of(session, [loc.id])
            current = location_object(loc, evses.get(loc.id, []))
            version = loc.version
            delivered = await session.get(OcpiDelivery, (partner.id, loc.id))
            target = f"{url}/{loc.country_code}/{loc.party_id}/{loc.id}"
            headers = {
                "Authorization": token_header(partner.their_token),
                "X-Request-ID": str(uuid.uuid4()),
                "X-Correlation-ID": str(uuid.uuid4()),
                "OCPI-from-country-code": cpo.country_code,
                "OCPI-from-party-id": cpo.party_id,
                "OCPI-to-country-code": partner.country_code or "",
                "OCPI-to-party-id": partner.party_id or "",
            }
        # the session is closed: no database connection is held while the eMSP answers
        if delivered is not None and delivered.version >= version:
            return PushResult(outcome="UP_TO_DATE", version=delivered.version)
        certain = delivered is not None and not delivered.in_doubt and not inp.force_put
        patch = patch_body(delivered.object, current) if certain and delivered is not None else None
        method, body = ("PATCH", patch) if patch is not None else ("PUT", current)
        if delivered is not None and not delivered.in_doubt:
            await self._in_doubt(partner.id, loc.id)
        try:
            async with self._slot(partner.id):
                # the egress policy, a total deadline and a byte cap, as every peer-chosen URL
                response = await peer_request(
                    method,
                    target,
                    policy=self.policy,
                    headers=headers,
                    json=body,
                    deadline_seconds=self.settings.ocpi_push_attempt_timeout_seconds * 0.8,
                )
        except PeerUnusable as err:  # refused, unreachable, too slow, too big: retried with backoff
            raise ApplicationError(f"{method} of {loc.id}: the eMSP could not be used; retrying") from err
        status = response.status
        try:
            envelope = response.json()
        except PeerUnusable:
            envelope = None
        code = envelope.get("status_code") if isinstance(envelope, dict) else None
        # the eMSP's answer is not quoted: its status and OCPI code say what operators need
        if status in (408, 425, 429) or status >= 500 or (isinstance(code, int) and code >= 3000):
            raise ApplicationError(f"{method} of {loc.id}: HTTP {status}, OCPI {code}; retrying")
        if not (200 <= status < 300 and (code is None or (isinstance(code, int) and code < 2000))):
            raise ApplicationError(
                f"{method} of {loc.id} refused: HTTP {status}, OCPI {code}",
                type=PATCH_REJECTED if method == "PATCH" else REJECTED,
                non_retryable=True,
            )
        await self._delivered(partner.id, loc.id, version, current, method)
        return PushResult(outcome="DELIVERED", method=method, version=version)

    async def _delivered(
        self, partner_id: int, location_id: str, version: int, sent: dict[str, Any], method: str
    ) -> None:
        """Record what the eMSP now holds, no longer in doubt. Pushes of one (eMSP, location) run
        one at a time, but a late attempt must still never move the record back to an older
        version."""
        stmt = insert(OcpiDelivery).values(
            partner_id=partner_id,
            location_id=location_id,
            version=version,
            object=sent,
            method=method,
            delivered_at=utcnow(),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["partner_id", "location_id"],
            set_={
                "version": stmt.excluded.version,
                "object": stmt.excluded.object,
                "method": stmt.excluded.method,
                "delivered_at": stmt.excluded.delivered_at,
                "in_doubt": False,
            },
            where=col(OcpiDelivery.version) <= stmt.excluded.version,
        )
        async with self.sessions() as session, session.begin():
            await session.execute(stmt)

    async def _in_doubt(self, partner_id: int, location_id: str) -> None:
        """Before a send: until it is recorded, the eMSP may hold either object. A push whose
        outcome is never recorded (a killed worker, a lost answer) leaves this set, and the next
        push is then a PUT: a difference from the recorded object could leave fields behind."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(OcpiDelivery)
                .where(
                    col(OcpiDelivery.partner_id) == partner_id, col(OcpiDelivery.location_id) == location_id
                )
                .values(in_doubt=True)
            )
