"""The OCPI 2.2.1 interface of each CPO, mounted at `/ocpi/cpo/{cpo_id}`.

`versions` -> `2.2.1` (version details) -> `credentials` (Sender and Receiver: an eMSP registers,
updates, unregisters) and `locations` (Sender: list, one location, one EVSE, one connector).
An eMSP registered with one CPO sees that CPO's locations only: its token is looked up together
with the CPO of the path.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.deps import Cpo, SessionDep, SettingsDep
from api.ocpi import transport
from api.ocpi.client import VERSION, PeerVersion, fetch_peer
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
        "token": token, "url": versions_url(settings, cpo.id),
        "roles": [{"role": "CPO", "party_id": cpo.party_id, "country_code": cpo.country_code,
                   "business_details": {"name": cpo.name[:100]}}],
    }


def new_token() -> str:
    return secrets.token_urlsafe(32)  # 43 characters: fits CiString(64)


router = APIRouter(prefix="/{cpo_id}")


async def _cpo(session: SessionDep, cpo_id: int) -> PartnerOperation:
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
    return ocpi_json({"version": VERSION, "endpoints": [
        {"identifier": "credentials", "role": "SENDER", "url": f"{base}/credentials"},
        {"identifier": "credentials", "role": "RECEIVER", "url": f"{base}/credentials"},
        {"identifier": "locations", "role": "SENDER", "url": f"{base}/locations"},
    ]})


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
    partner.status = "REGISTERED"
    partner.updated_at = utcnow()


async def _peer(settings: Settings, body: CredentialsIn) -> PeerVersion:
    async with httpx.AsyncClient(timeout=settings.ocpi_http_timeout_seconds) as http:
        return await fetch_peer(http, body.url, body.token)


async def _answer_with_new_token(
    session: AsyncSession, settings: Settings, cpo: PartnerOperation, partner: OcpiPartner,
    body: CredentialsIn, peer: PeerVersion,
) -> JSONResponse:
    """Keep the eMSP's credentials and endpoints, issue our new token, answer with ours."""
    token = new_token()
    apply_credentials(partner, body, peer, token)
    answer = our_credentials(settings, cpo, token)
    await session.commit()
    return ocpi_json(answer)


@router.post(f"/{VERSION}/credentials", summary="An eMSP registers (with token A)")
async def post_credentials(
    body: CredentialsIn, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> JSONResponse:
    """Fetch the eMSP's versions and endpoints with its token, keep its token, answer ours.
    The token A is spent in the same transaction: a second POST with it gets 401."""
    if caller.partner is not None:
        raise OcpiError(405, CLIENT_ERROR, "already registered: use PUT to update, DELETE to unregister")
    assert caller.token_a is not None
    cpo = await _cpo(session, caller.cpo_id)
    token_a_id = caller.token_a.id
    peer = await _peer(settings, body)
    role = _emsp_role(body)
    spent = await session.execute(
        update(OcpiTokenA).where(col(OcpiTokenA.id) == token_a_id, col(OcpiTokenA.used_at).is_(None))
        .values(used_at=utcnow()).returning(col(OcpiTokenA.id))
    )
    if spent.scalar_one_or_none() is None:
        await session.rollback()
        raise unauthorized("this token A was already used to register; it is void")
    partner = (await session.execute(
        select(OcpiPartner).where(col(OcpiPartner.cpo_id) == caller.cpo_id,
                                  col(OcpiPartner.country_code) == role.country_code.upper(),
                                  col(OcpiPartner.party_id) == role.party_id.upper())
        .with_for_update()
    )).scalar_one_or_none()
    if partner is not None and partner.status == "REGISTERED":
        await session.rollback()
        raise OcpiError(405, CLIENT_ERROR, f"{role.country_code}*{role.party_id} is already registered")
    if partner is None:
        partner = OcpiPartner(cpo_id=caller.cpo_id, versions_url=body.url)
        session.add(partner)
    return await _answer_with_new_token(session, settings, cpo, partner, body, peer)


@router.put(f"/{VERSION}/credentials", summary="A registered eMSP updates its credentials")
async def put_credentials(
    body: CredentialsIn, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> JSONResponse:
    """Endpoints fetched again; a new token replaces the one used for this call."""
    if caller.partner is None:
        raise OcpiError(405, CLIENT_ERROR, "not registered: POST with token A first")
    cpo = await _cpo(session, caller.cpo_id)
    partner = caller.partner
    peer = await _peer(settings, body)
    return await _answer_with_new_token(session, settings, cpo, partner, body, peer)


@router.delete(f"/{VERSION}/credentials", summary="A registered eMSP unregisters")
async def delete_credentials(caller: CallerDep, session: SessionDep) -> JSONResponse:
    """Both tokens die; no more pushes go to this eMSP."""
    if caller.partner is None:
        raise OcpiError(405, CLIENT_ERROR, "not registered")
    partner = caller.partner
    partner.status, partner.token_hash, partner.their_token = "UNREGISTERED", None, None
    partner.updated_at = utcnow()
    await session.commit()
    return ocpi_json(None)


def _datetime(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as err:
        raise OcpiError(200, INVALID_PARAMETERS,
                        f"{name} is not an RFC 3339 date-time: {value[:40]!r}") from err
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # no zone means UTC (types)


def routing_headers(cpo: PartnerOperation, caller: transport.Caller) -> dict[str, str]:
    """OCPI 2.2.1 routing headers on the Sender's answers: from the CPO, to the eMSP."""
    partner = caller.partner
    return {"OCPI-from-country-code": cpo.country_code, "OCPI-from-party-id": cpo.party_id,
            "OCPI-to-country-code": (partner.country_code or "") if partner else "",
            "OCPI-to-party-id": (partner.party_id or "") if partner else ""}


@router.get(f"/{VERSION}/locations", summary="Locations Sender: paginated list")
async def list_locations(
    request: Request, caller: RegisteredDep, session: SessionDep, settings: SettingsDep,
    date_from: Annotated[str | None, Query(max_length=40)] = None,
    date_to: Annotated[str | None, Query(max_length=40)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=10_000_000)] = None,
) -> JSONResponse:
    """Oldest first; `X-Total-Count`, `X-Limit` and a `Link` to the next page while there is one."""
    start, end = _datetime("date_from", date_from), _datetime("date_to", date_to)
    page_limit = min(limit or settings.ocpi_page_limit, settings.ocpi_page_limit)
    data, total = await location_page(session, caller.cpo_id, start, end, offset, page_limit)
    headers = {"X-Total-Count": str(total), "X-Limit": str(page_limit),
               **routing_headers(await _cpo(session, caller.cpo_id), caller)}
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
    return ocpi_json(found, headers=routing_headers(await _cpo(session, caller.cpo_id), caller))


@router.get(f"/{VERSION}/locations/{{location_id}}/{{evse_uid}}", summary="Locations Sender: one EVSE")
async def get_evse(
    location_id: str, evse_uid: str, caller: RegisteredDep, session: SessionDep
) -> JSONResponse:
    evse = _evse(await _location(session, caller, location_id), evse_uid)
    return ocpi_json(evse, headers=routing_headers(await _cpo(session, caller.cpo_id), caller))


@router.get(f"/{VERSION}/locations/{{location_id}}/{{evse_uid}}/{{connector_id}}",
            summary="Locations Sender: one connector")
async def get_connector(
    location_id: str, evse_uid: str, connector_id: str, caller: RegisteredDep, session: SessionDep
) -> JSONResponse:
    evse = _evse(await _location(session, caller, location_id), evse_uid)
    for connector in evse["connectors"]:
        if str(connector["id"]).lower() == connector_id.lower():
            return ocpi_json(connector, headers=routing_headers(await _cpo(session, caller.cpo_id), caller))
    raise OcpiError(404, UNKNOWN_LOCATION, f"unknown connector {connector_id[:36]}")


def create_ocpi_app() -> FastAPI:
    """A sub-application so that every answer, errors included, is the OCPI envelope (the main
    app answers problem+json). Its own OpenAPI is at /ocpi/cpo/docs."""
    app = FastAPI(title="OCPPLAB Gateway: OCPI 2.2.1 (CPO)", version=VERSION,
                  description="OCPI 2.2.1 interface of each CPO for its eMSPs. "
                              "`Authorization: Token <base64 token>`.")
    transport.install(app)
    app.include_router(router)
    return app
