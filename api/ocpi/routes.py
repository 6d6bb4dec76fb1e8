"""The OCPI 2.2.1 interface of each CPO, mounted at `/ocpi/cpo/{cpo_id}`.

`versions` -> `2.2.1` (version details) -> `credentials` (Sender and Receiver: an eMSP registers,
updates, unregisters) and `locations` (Sender: list, one location, one EVSE, one connector).
An eMSP registered with one CPO sees that CPO's locations only: its token is looked up together
with the CPO of the path.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from api.deps import Cpo, SessionDep, SettingsDep
from api.ocpi import transport
from api.ocpi.client import VERSION, HandshakeSlots, PeerVersion, fetch_peer
from api.ocpi.transport import (
    CLIENT_ERROR,
    INVALID_PARAMETERS,
    UNKNOWN_LOCATION,
    CallerDep,
    OcpiError,
    RegisteredDep,
    ocpi_json,
    unauthorized,
)
from api.state import services
from contracts.ids import sha256_hex
from db.models import OcpiPartner, OcpiTokenA, PartnerOperation, utcnow
from db.ocpi_wire import location_by_id, location_page
from settings import Settings

Printable = r"^[\x21-\x7e]+$"  # printable ASCII, no whitespace (a token travels in a header)


class BusinessDetailsIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    website: str | None = Field(default=None, max_length=255)
    logo: dict[str, Any] | None = None


class CredentialsRoleIn(BaseModel):
    role: Literal["CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP"]
    business_details: BusinessDetailsIn
    party_id: str = Field(pattern=r"^[A-Za-z0-9]{3}$")
    country_code: str = Field(pattern=r"^[A-Za-z]{2}$")


class CredentialsIn(BaseModel):
    token: str = Field(min_length=1, max_length=64, pattern=Printable)
    url: str = Field(min_length=10, max_length=255, pattern=r"^https?://[\x21-\x7e]+$")
    roles: list[CredentialsRoleIn] = Field(min_length=1, max_length=20)


def versions_url(settings: Settings, cpo_id: int) -> str:
    """The CPO's OCPI versions URL: what OCPPLAB calls `ocpi_peer_url`."""
    return f"{settings.api_url.rstrip('/')}/ocpi/cpo/{cpo_id}/versions"


def version_url(settings: Settings, cpo_id: int) -> str:
    return f"{settings.api_url.rstrip('/')}/ocpi/cpo/{cpo_id}/{VERSION}"


def our_credentials(settings: Settings, cpo: PartnerOperation | Cpo, token: str) -> dict[str, Any]:
    assert cpo.id is not None
    return {
        "token": token,
        "url": versions_url(settings, cpo.id),
        "roles": [
            {
                "role": "CPO",
                "party_id": cpo.party_id,
                "country_code": cpo.country_code,
                "business_details": {"name": cpo.name[:100]},
            }
        ],
    }


def new_token() -> str:
    return secrets.token_urlsafe(32)  # 43 characters: fits CiString(64)


router = APIRouter(prefix="/{cpo_id}")


async def _cpo(session: AsyncSession, cpo_id: int) -> PartnerOperation:
    cpo = await session.get(PartnerOperation, cpo_id)
    if cpo is None:  # the token matched, so the CPO existed a moment ago
        raise unauthorized("unknown CPO")
    return cpo


@router.get("/versions", summary="OCPI versions")
async def get_versions(caller: CallerDep, settings: SettingsDep) -> JSONResponse:
    return ocpi_json([{"version": VERSION, "url": version_url(settings, caller.cpo_id)}])


@router.get(f"/{VERSION}", summary="OCPI 2.2.1 version details")
async def get_version_details(caller: CallerDep, settings: SettingsDep) -> JSONResponse:
    base = version_url(settings, caller.cpo_id)
    return ocpi_json(
        {
            "version": VERSION,
            "endpoints": [
                {"identifier": "credentials", "role": "SENDER", "url": f"{base}/credentials"},
                {"identifier": "credentials", "role": "RECEIVER", "url": f"{base}/credentials"},
                {"identifier": "locations", "role": "SENDER", "url": f"{base}/locations"},
            ],
        }
    )


@router.get(f"/{VERSION}/credentials", summary="Our credentials")
async def get_credentials(caller: CallerDep, session: SessionDep, settings: SettingsDep) -> JSONResponse:
    cpo = await _cpo(session, caller.cpo_id)
    return ocpi_json(our_credentials(settings, cpo, caller.token))


def _emsp_role(body: CredentialsIn) -> CredentialsRoleIn:
    for role in body.roles:
        if role.role == "EMSP":
            return role
    return body.roles[0]


def apply_credentials(partner: OcpiPartner, body: CredentialsIn, peer: PeerVersion, token: str) -> None:
    role = _emsp_role(body)
    partner.country_code = role.country_code.upper()
    partner.party_id = role.party_id.upper()
    partner.role = role.role
    partner.name = role.business_details.name
    partner.roles = [r.model_dump(mode="json") for r in body.roles]
    partner.versions_url = body.url
    partner.version = VERSION
    partner.endpoints = peer.endpoints
    partner.their_token = body.token
    partner.token_hash = sha256_hex(token)
    partner.pending_token_hash = None
    partner.status = "REGISTERED"
    partner.updated_at = utcnow()


def sessions_of(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = services(request).sessions
    return sessions


@asynccontextmanager
async def handshake_slot(request: Request, cpo_id: int) -> AsyncIterator[None]:
    """Refused at once (429, OCPI 2000) when this CPO, or this process, has its handshakes."""
    slots: HandshakeSlots = services(request).handshakes
    async with slots.take(cpo_id) as taken:
        if not taken:
            raise OcpiError(
                429,
                CLIENT_ERROR,
                "too many credentials handshakes at once; retry later",
                headers={"Retry-After": "5"},
            )
        yield


async def lock_cpo(session: AsyncSession, cpo_id: int) -> PartnerOperation:
    """The CPO row, locked: one registration of a CPO at a time, so its eMSP limit holds."""
    cpo = (
        await session.execute(
            select(PartnerOperation).where(col(PartnerOperation.id) == cpo_id).with_for_update()
        )
    ).scalar_one_or_none()
    if cpo is None:  # the token matched, so the CPO existed a moment ago
        raise unauthorized("unknown CPO")
    return cpo


async def emsp_count(session: AsyncSession, cpo_id: int) -> int:
    """eMSPs that count against `ocpi_max_emsps_per_cpo` (unregistered ones do not)."""
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(OcpiPartner)
                .where(col(OcpiPartner.cpo_id) == cpo_id, col(OcpiPartner.status) != "UNREGISTERED")
            )
        ).scalar_one()
    )


async def _commit_or_conflict(session: AsyncSession) -> None:
    """A credentials object whose party another eMSP of this CPO already has: 409 + 2001."""
    try:
        await session.commit()
    except IntegrityError as err:
        await session.rollback()
        raise OcpiError(
            409,
            INVALID_PARAMETERS,
            "another eMSP of this CPO is registered with that country_code and party_id",
        ) from err


@router.post(f"/{VERSION}/credentials", summary="An eMSP registers (with token A)")
async def post_credentials(
    body: CredentialsIn, caller: CallerDep, request: Request, settings: SettingsDep
) -> JSONResponse:
    """Fetch the eMSP's versions and endpoints with its token (no database connection is held
    meanwhile), then register in one transaction that also spends the token A: a failed
    handshake spends nothing and leaves no row; a second POST with the token A gets 401."""
    if caller.partner_id is not None:
        raise OcpiError(405, CLIENT_ERROR, "already registered: use PUT to update, DELETE to unregister")
    assert caller.token_a_id is not None
    async with handshake_slot(request, caller.cpo_id):
        peer = await fetch_peer(settings.egress_policy(), body.url, body.token)
    role = _emsp_role(body)
    token = new_token()
    now = utcnow()
    async with sessions_of(request)() as session:
        cpo = await lock_cpo(session, caller.cpo_id)
        spent = await session.execute(
            update(OcpiTokenA)
            .where(
                col(OcpiTokenA.id) == caller.token_a_id,
                col(OcpiTokenA.used_at).is_(None),
                col(OcpiTokenA.revoked_at).is_(None),
                or_(col(OcpiTokenA.expires_at).is_(None), col(OcpiTokenA.expires_at) > now),
            )
            .values(used_at=now)
            .returning(col(OcpiTokenA.id))
        )
        if spent.scalar_one_or_none() is None:
            await session.rollback()
            raise unauthorized("this token A was used, revoked or has expired")
        partner = (
            await session.execute(
                select(OcpiPartner)
                .where(
                    col(OcpiPartner.cpo_id) == caller.cpo_id,
                    col(OcpiPartner.country_code) == role.country_code.upper(),
                    col(OcpiPartner.party_id) == role.party_id.upper(),
                )
                .with_for_update()
            )
        ).scalar_one_or_none()
        if partner is not None and partner.status != "UNREGISTERED":
            await session.rollback()
            raise OcpiError(405, CLIENT_ERROR, f"{role.country_code}*{role.party_id} is already registered")
        if partner is None:
            if await emsp_count(session, caller.cpo_id) >= settings.ocpi_max_emsps_per_cpo:
                await session.rollback()
                raise OcpiError(409, CLIENT_ERROR, "this CPO has as many eMSPs as it may have")
            partner = OcpiPartner(cpo_id=caller.cpo_id, versions_url=body.url)
            session.add(partner)
        apply_credentials(partner, body, peer, token)
        partner.registered_by = "EMSP"
        answer = our_credentials(settings, cpo, token)
        await _commit_or_conflict(session)
    return ocpi_json(answer)


@router.put(f"/{VERSION}/credentials", summary="A registered eMSP updates its credentials")
async def put_credentials(
    body: CredentialsIn, caller: CallerDep, request: Request, settings: SettingsDep
) -> JSONResponse:
    """Endpoints fetched again (no database connection held meanwhile); a new token replaces
    the one used for this call."""
    if caller.partner_id is None or caller.partner_status != "REGISTERED":
        raise OcpiError(405, CLIENT_ERROR, "not registered: POST with token A first")
    async with handshake_slot(request, caller.cpo_id):
        peer = await fetch_peer(settings.egress_policy(), body.url, body.token)
    token = new_token()
    async with sessions_of(request)() as session:
        cpo = await _cpo(session, caller.cpo_id)
        partner = (
            await session.execute(
                select(OcpiPartner)
                .where(col(OcpiPartner.id) == caller.partner_id, col(OcpiPartner.status) == "REGISTERED")
                .with_for_update()
            )
        ).scalar_one_or_none()
        if partner is None:  # unregistered or suspended meanwhile
            raise unauthorized("unknown token")
        apply_credentials(partner, body, peer, token)
        answer = our_credentials(settings, cpo, token)
        await _commit_or_conflict(session)
    return ocpi_json(answer)


@router.delete(f"/{VERSION}/credentials", summary="A registered eMSP unregisters")
async def delete_credentials(caller: CallerDep, session: SessionDep) -> JSONResponse:
    """Both tokens die; no more pushes go to this eMSP."""
    if caller.partner_id is None or caller.partner_status != "REGISTERED":
        raise OcpiError(405, CLIENT_ERROR, "not registered")
    await session.execute(
        update(OcpiPartner)
        .where(col(OcpiPartner.id) == caller.partner_id)
        .values(
            status="UNREGISTERED",
            token_hash=None,
            pending_token_hash=None,
            their_token=None,
            updated_at=utcnow(),
        )
    )
    await session.commit()
    return ocpi_json(None)


def _datetime(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as err:
        raise OcpiError(
            200, INVALID_PARAMETERS, f"{name} is not an RFC 3339 date-time: {value[:40]!r}"
        ) from err
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # no zone means UTC (types)


async def routing_headers(session: AsyncSession, caller: transport.Caller) -> dict[str, str]:
    """OCPI 2.2.1 routing headers on the Sender's answers: from the CPO, to the eMSP."""
    cpo = await _cpo(session, caller.cpo_id)
    partner = await session.get(OcpiPartner, caller.partner_id) if caller.partner_id is not None else None
    return {
        "OCPI-from-country-code": cpo.country_code,
        "OCPI-from-party-id": cpo.party_id,
        "OCPI-to-country-code": (partner.country_code or "") if partner else "",
        "OCPI-to-party-id": (partner.party_id or "") if partner else "",
    }


@router.get(f"/{VERSION}/locations", summary="Locations Sender: paginated list")
async def list_locations(
    request: Request,
    caller: RegisteredDep,
    session: SessionDep,
    settings: SettingsDep,
    date_from: Annotated[str | None, Query(max_length=40)] = None,
    date_to: Annotated[str | None, Query(max_length=40)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=10_000_000)] = None,
) -> JSONResponse:
    """Oldest first; `X-Total-Count`, `X-Limit` and a `Link` to the next page while there is one."""
    start, end = _datetime("date_from", date_from), _datetime("date_to", date_to)
    page_limit = min(limit or settings.ocpi_page_limit, settings.ocpi_page_limit)
    data, total = await location_page(session, caller.cpo_id, start, end, offset, page_limit)
    headers = {
        "X-Total-Count": str(total),
        "X-Limit": str(page_limit),
        **await routing_headers(session, caller),
    }
    if offset + len(data) < total:
        query: dict[str, str | int] = {"offset": offset + len(data), "limit": page_limit}
        query |= {k: v for k, v in (("date_from", date_from), ("date_to", date_to)) if v is not None}
        base = f"{version_url(settings, caller.cpo_id)}/locations"
        headers["Link"] = f'<{base}?{urlencode(query)}>; rel="next"'
    return ocpi_json(data, headers=headers)


async def _location(session: SessionDep, caller: transport.Caller, location_id: str) -> dict[str, Any]:
    found = await location_by_id(session, caller.cpo_id, location_id) if len(location_id) <= 36 else None
    if found is None:
        raise OcpiError(404, UNKNOWN_LOCATION, f"unknown location {location_id[:36]}")
    return found


def _evse(location: dict[str, Any], evse_uid: str) -> dict[str, Any]:
    for evse in location["evses"]:
        if str(evse["uid"]).lower() == evse_uid.lower():  # CiString
            return dict(evse)
    raise OcpiError(404, UNKNOWN_LOCATION, f"unknown EVSE {evse_uid[:36]}")


@router.get(f"/{VERSION}/locations/{{location_id}}", summary="Locations Sender: one location")
async def get_location(location_id: str, caller: RegisteredDep, session: SessionDep) -> JSONResponse:
    found = await _location(session, caller, location_id)
    return ocpi_json(found, headers=await routing_headers(session, caller))


@router.get(f"/{VERSION}/locations/{{location_id}}/{{evse_uid}}", summary="Locations Sender: one EVSE")
async def get_evse(
    location_id: str, evse_uid: str, caller: RegisteredDep, session: SessionDep
) -> JSONResponse:
    evse = _evse(await _location(session, caller, location_id), evse_uid)
    return ocpi_json(evse, headers=await routing_headers(session, caller))


@router.get(
    f"/{VERSION}/locations/{{location_id}}/{{evse_uid}}/{{connector_id}}",
    summary="Locations Sender: one connector",
)
async def get_connector(
    location_id: str, evse_uid: str, connector_id: str, caller: RegisteredDep, session: SessionDep
) -> JSONResponse:
    evse = _evse(await _location(session, caller, location_id), evse_uid)
    for connector in evse["connectors"]:
        if str(connector["id"]).lower() == connector_id.lower():
            return ocpi_json(connector, headers=await routing_headers(session, caller))
    raise OcpiError(404, UNKNOWN_LOCATION, f"unknown connector {connector_id[:36]}")


def create_ocpi_app() -> FastAPI:
    """A sub-application so that every answer, errors included, is the OCPI envelope (the main
    app answers problem+json). Its own OpenAPI is at /ocpi/cpo/docs."""
    app = FastAPI(
        title="OCPPLAB Gateway: OCPI 2.2.1 (CPO)",
        version=VERSION,
        description="OCPI 2.2.1 interface of each CPO for its eMSPs. `Authorization: Token <base64 token>`.",
    )
    transport.install(app)
    app.include_router(router)
    return app
