"""CPOs: created by the admin; each gets its own bearer token, shown once, and is an OCPI 2.2.1
party whose eMSPs connect with a token A and the CPO's OCPI versions URL (`ocpi_peer_url`)."""

from __future__ import annotations

import secrets
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, status
from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.deps import CpoDep, Principal, SessionDep, SettingsDep, require_admin
from api.ocpi.client import fetch_peer, post_credentials
from api.ocpi.routes import CredentialsIn, apply_credentials, new_token, our_credentials, versions_url
from api.ocpi.transport import OcpiError
from api.problems import ApiError, error_responses
from api.schemas import CpoCreated, CpoIn, EmspOut, EmspRegisterIn, Party, TokenAOut
from contracts.ids import sha256_hex
from db.models import ApiToken, OcpiPartner, OcpiTokenA, PartnerOperation

router = APIRouter(prefix="/ocpi/cpos", tags=["CPOs"])


def _token_a(session: AsyncSession, cpo_id: int) -> tuple[str, OcpiTokenA]:
    token = new_token()
    row = OcpiTokenA(cpo_id=cpo_id, token_hash=sha256_hex(token))
    session.add(row)
    return token, row


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=CpoCreated,
    responses=error_responses(400, 401, 403, 409, 422, 503),
    summary="Create a CPO (admin)",
)
async def create_cpo(
    body: CpoIn, session: SessionDep, settings: SettingsDep,
    _: Annotated[Principal, Depends(require_admin)],
) -> CpoCreated:
    """A CPO is a row of `ocpp.partner_operations`, which is also its network. The answer also
    carries, as OCPPLAB's gateway does, a token A and the OCPI versions URL for its eMSPs."""
    token = f"cpo_{secrets.token_urlsafe(32)}"
    cpo = PartnerOperation(name=body.name, country_code=body.country_code, party_id=body.party_id)
    session.add(cpo)
    try:
        await session.flush()
        assert cpo.id is not None
        session.add(ApiToken(cpo_id=cpo.id, token_hash=sha256_hex(token)))
        token_a, _row = _token_a(session, cpo.id)
        await session.commit()
    except IntegrityError as err:
        await session.rollback()
        raise ApiError(409, "CPO_EXISTS",
                       f"a CPO with party {body.country_code}*{body.party_id} exists") from err
    return CpoCreated(
        cpo_id=str(cpo.id), name=cpo.name,
        party=Party(country_code=cpo.country_code, party_id=cpo.party_id), token=token,
        token_a=token_a, ocpi_peer_url=versions_url(settings, cpo.id), created_at=cpo.created_at,
    )


@router.post(
    "/{cpo_id}/token_a", status_code=status.HTTP_201_CREATED, response_model=TokenAOut,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Issue a new OCPI token A for a CPO (admin)",
)
async def issue_token_a(
    cpo: CpoDep, session: SessionDep, settings: SettingsDep,
    _: Annotated[Principal, Depends(require_admin)],
) -> TokenAOut:
    """One token A per eMSP to be connected: each is spent by the registration that uses it."""
    assert cpo.id is not None
    cpo_id = cpo.id
    token_a, row = _token_a(session, cpo_id)
    await session.commit()
    return TokenAOut(cpo_id=str(cpo_id), token_a=token_a, ocpi_peer_url=versions_url(settings, cpo_id),
                     created_at=row.created_at)


def emsp_out(partner: OcpiPartner) -> EmspOut:
    return EmspOut(
        id=str(partner.id), country_code=partner.country_code, party_id=partner.party_id,
        role=partner.role, name=partner.name, versions_url=partner.versions_url, version=partner.version,
        status=partner.status, created_at=partner.created_at, updated_at=partner.updated_at,
    )


@router.get(
    "/{cpo_id}/emsps", response_model=list[EmspOut], responses=error_responses(401, 403, 404, 422, 503),
    summary="The eMSPs connected to a CPO over OCPI",
)
async def list_emsps(cpo: CpoDep, session: SessionDep) -> list[EmspOut]:
    rows = (await session.execute(
        select(OcpiPartner).where(col(OcpiPartner.cpo_id) == cpo.id).order_by(col(OcpiPartner.id))
    )).scalars().all()
    return [emsp_out(p) for p in rows]


@router.post(
    "/{cpo_id}/emsps", status_code=status.HTTP_201_CREATED, response_model=EmspOut,
    responses=error_responses(400, 401, 403, 404, 409, 422, 503),
    summary="Register the CPO with an eMSP (OCPI credentials handshake, CPO as client)",
)
async def register_with_emsp(
    body: EmspRegisterIn, cpo: CpoDep, session: SessionDep, settings: SettingsDep
) -> EmspOut:
    """With the eMSP's versions URL and token A: fetch its 2.2.1 endpoints, POST our credentials
    to its credentials module, keep the token it answers (to push to it). Our token for it is
    valid from the start, because the eMSP calls our versions back during that POST."""
    assert cpo.id is not None
    ours = new_token()
    partner = OcpiPartner(cpo_id=cpo.id, versions_url=body.versions_url, token_hash=sha256_hex(ours),
                          status="REGISTERING")
    session.add(partner)
    await session.commit()
    try:
        async with httpx.AsyncClient(timeout=settings.ocpi_http_timeout_seconds) as http:
            peer = await fetch_peer(http, body.versions_url, body.token_a)
            url = peer.url_of("credentials", "RECEIVER") or peer.url_of("credentials", "SENDER")
            if url is None:
                raise OcpiError(502, 3003, "the eMSP lists no credentials endpoint")
            theirs = CredentialsIn.model_validate(
                await post_credentials(http, url, body.token_a, our_credentials(settings, cpo, ours)))
        apply_credentials(partner, theirs, peer, ours)
        await session.commit()
    except (OcpiError, ValidationError, IntegrityError) as err:
        await session.rollback()
        await session.execute(delete(OcpiPartner).where(col(OcpiPartner.id) == partner.id))
        await session.commit()
        if isinstance(err, IntegrityError):
            raise ApiError(409, "EMSP_ALREADY_REGISTERED",
                           "this eMSP is already registered with this CPO") from err
        detail = err.message if isinstance(err, OcpiError) else f"the eMSP's credentials are invalid: {err}"
        # 422, not 502: the URL and token A given are what could not be used
        raise ApiError(422, "EMSP_REGISTRATION_FAILED", detail) from err
    return emsp_out(partner)

