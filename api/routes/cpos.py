"""CPOs: created by the admin; each gets its own bearer token, shown once, and is an OCPI 2.2.1
party whose eMSPs connect with a token A and the CPO's OCPI versions URL (`ocpi_peer_url`)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status
from pydantic import ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from api.deps import CpoDep, Principal, SessionDep, SettingsDep, require_admin
from api.ocpi.client import UNUSABLE, HandshakeSlots, PeerVersion, call, fetch_peer, send_credentials
from api.ocpi.routes import (
    CredentialsIn,
    apply_credentials,
    emsp_count,
    lock_cpo,
    new_token,
    our_credentials,
    sessions_of,
    versions_url,
)
from api.ocpi.transport import NO_MATCHING_ENDPOINTS, UNABLE_TO_USE_CLIENT_API, OcpiError, handshake_window
from api.problems import ApiError, error_responses
from api.schemas import (
    CpoCreated,
    CpoIn,
    EmspOut,
    EmspRegisterIn,
    EmspStatusIn,
    Party,
    TokenAInfo,
    TokenAOut,
)
from api.state import services
from contracts.ids import sha256_hex
from db.models import ApiToken, OcpiPartner, OcpiTokenA, PartnerOperation, utcnow
from settings import Settings

log = logging.getLogger("api")
TokenAIdPath = Annotated[int, Path(ge=1, le=2**62, description="the token_a_id returned when it was issued")]
EmspIdPath = Annotated[int, Path(ge=1, le=2**62, description="the eMSP's id (GET /ocpi/cpos/{cpo_id}/emsps)")]

router = APIRouter(prefix="/ocpi/cpos", tags=["CPOs"])


def _token_a(session: AsyncSession, cpo_id: int, settings: Settings) -> tuple[str, OcpiTokenA]:
    token = new_token()
    now = utcnow()
    row = OcpiTokenA(
        cpo_id=cpo_id,
        token_hash=sha256_hex(token),
        created_at=now,
        expires_at=now + timedelta(seconds=settings.ocpi_token_a_ttl_seconds),
    )
    session.add(row)
    return token, row


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CpoCreated,
    responses=error_responses(400, 401, 403, 409, 422, 503),
    summary="Create a CPO (admin)",
)
async def create_cpo(
    body: CpoIn,
    session: SessionDep,
    settings: SettingsDep,
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
        token_a, _row = _token_a(session, cpo.id, settings)
        await session.commit()
    except IntegrityError as err:
        await session.rollback()
        raise ApiError(
            409, "CPO_EXISTS", f"a CPO with party {body.country_code}*{body.party_id} exists"
        ) from err
    return CpoCreated(
        cpo_id=str(cpo.id),
        name=cpo.name,
        party=Party(country_code=cpo.country_code, party_id=cpo.party_id),
        token=token,
        token_a=token_a,
        ocpi_peer_url=versions_url(settings, cpo.id),
        created_at=cpo.created_at,
    )


@router.post(
    "/{cpo_id}/token_a",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenAOut,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Issue a new OCPI token A for a CPO (admin)",
)
async def issue_token_a(
    cpo: CpoDep,
    session: SessionDep,
    settings: SettingsDep,
    _: Annotated[Principal, Depends(require_admin)],
) -> TokenAOut:
    """One token A per eMSP to be connected: each is spent by the registration that uses it,
    and opens nothing after `ocpi_token_a_ttl_seconds` or once revoked."""
    assert cpo.id is not None
    cpo_id = cpo.id
    token_a, row = _token_a(session, cpo_id, settings)
    await session.commit()
    assert row.id is not None and row.expires_at is not None
    return TokenAOut(
        cpo_id=str(cpo_id),
        token_a_id=str(row.id),
        token_a=token_a,
        ocpi_peer_url=versions_url(settings, cpo_id),
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def _token_a_state(row: OcpiTokenA, now: datetime) -> str:
    if row.used_at is not None:
        return "USED"
    if row.revoked_at is not None:
        return "REVOKED"
    if row.expires_at is not None and row.expires_at <= now:
        return "EXPIRED"
    return "ACTIVE"


@router.get(
    "/{cpo_id}/token_a",
    response_model=list[TokenAInfo],
    responses=error_responses(401, 403, 404, 422, 503),
    summary="The CPO's OCPI tokens A and their state (admin)",
)
async def list_token_a(
    cpo: CpoDep,
    session: SessionDep,
    _: Annotated[Principal, Depends(require_admin)],
) -> list[TokenAInfo]:
    """Newest first; the tokens themselves are never shown again (only their SHA-256 is kept)."""
    rows = (
        (
            await session.execute(
                select(OcpiTokenA).where(col(OcpiTokenA.cpo_id) == cpo.id).order_by(col(OcpiTokenA.id).desc())
            )
        )
        .scalars()
        .all()
    )
    now = utcnow()
    return [
        TokenAInfo(
            token_a_id=str(r.id),
            state=_token_a_state(r, now),
            created_at=r.created_at,
            expires_at=r.expires_at,
            used_at=r.used_at,
            revoked_at=r.revoked_at,
        )
        for r in rows
    ]


@router.delete(
    "/{cpo_id}/token_a/{token_a_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Revoke a token A (admin)",
)
async def revoke_token_a(
    cpo: CpoDep,
    token_a_id: TokenAIdPath,
    session: SessionDep,
    _: Annotated[Principal, Depends(require_admin)],
) -> None:
    """It opens nothing from now on (idempotent). A registration it already made stays."""
    found = (
        await session.execute(
            update(OcpiTokenA)
            .where(col(OcpiTokenA.id) == token_a_id, col(OcpiTokenA.cpo_id) == cpo.id)
            .values(revoked_at=func.coalesce(col(OcpiTokenA.revoked_at), utcnow()))
            .returning(col(OcpiTokenA.id))
        )
    ).scalar_one_or_none()
    await session.commit()
    if found is None:
        raise ApiError(404, "TOKEN_A_NOT_FOUND", f"no token A {token_a_id} for this CPO")


def emsp_out(partner: OcpiPartner) -> EmspOut:
    return EmspOut(
        id=str(partner.id),
        country_code=partner.country_code,
        party_id=partner.party_id,
        role=partner.role,
        name=partner.name,
        versions_url=partner.versions_url,
        version=partner.version,
        status=partner.status,
        created_at=partner.created_at,
        updated_at=partner.updated_at,
    )


@router.get(
    "/{cpo_id}/emsps",
    response_model=list[EmspOut],
    responses=error_responses(401, 403, 404, 422, 503),
    summary="The eMSPs connected to a CPO over OCPI",
)
async def list_emsps(cpo: CpoDep, session: SessionDep) -> list[EmspOut]:
    rows = (
        (
            await session.execute(
                select(OcpiPartner).where(col(OcpiPartner.cpo_id) == cpo.id).order_by(col(OcpiPartner.id))
            )
        )
        .scalars()
        .all()
    )
    return [emsp_out(p) for p in rows]


def _failed(err: Exception) -> ApiError:
    """The tenant learns that the eMSP could not be used and the OCPI code, nothing it answered
    (a 3001 is the same whatever happened: refused, closed, slow, too big or not OCPI)."""
    if isinstance(err, OcpiError) and err.status_code != UNABLE_TO_USE_CLIENT_API:
        detail = f"{err.message} (OCPI {err.status_code})"
    else:
        detail = f"{UNUSABLE} (OCPI {UNABLE_TO_USE_CLIENT_API})"
    # 422, not 502: the URL and token A given are what could not be used
    return ApiError(422, "EMSP_REGISTRATION_FAILED", detail)


@asynccontextmanager
async def _slot(request: Request, cpo_id: int) -> AsyncIterator[None]:
    slots: HandshakeSlots = services(request).handshakes
    async with slots.take(cpo_id) as taken:
        if not taken:
            raise ApiError(
                429,
                "TOO_MANY_HANDSHAKES",
                "too many OCPI handshakes at once for this CPO or this server; retry later",
                headers={"Retry-After": "5"},
            )
        yield


async def _registering(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, cpo_id: int, versions_url_: str, ours: str
) -> int:
    """The short-lived row that lets the eMSP call us back with our token during our POST (it
    authenticates only for `handshake_window`, and goes when the handshake fails)."""
    async with sessions() as session:
        await lock_cpo(session, cpo_id)
        stale = utcnow() - timedelta(seconds=handshake_window(settings))
        await session.execute(
            delete(OcpiPartner).where(
                col(OcpiPartner.cpo_id) == cpo_id,
                col(OcpiPartner.status) == "REGISTERING",
                col(OcpiPartner.updated_at) < stale,
            )
        )
        if await emsp_count(session, cpo_id) >= settings.ocpi_max_emsps_per_cpo:
            raise ApiError(
                409,
                "TOO_MANY_EMSPS",
                f"this CPO has {settings.ocpi_max_emsps_per_cpo} eMSPs, the most it may have",
            )
        partner = OcpiPartner(
            cpo_id=cpo_id,
            versions_url=versions_url_,
            token_hash=sha256_hex(ours),
            status="REGISTERING",
            registered_by="CPO",
        )
        session.add(partner)
        await session.commit()
        assert partner.id is not None
        return partner.id


async def _forget(sessions: async_sessionmaker[AsyncSession], partner_id: int) -> None:
    async with sessions() as session:
        await session.execute(
            delete(OcpiPartner).where(
                col(OcpiPartner.id) == partner_id, col(OcpiPartner.status) == "REGISTERING"
            )
        )
        await session.commit()


@router.post(
    "/{cpo_id}/emsps",
    status_code=status.HTTP_201_CREATED,
    response_model=EmspOut,
    responses=error_responses(400, 401, 403, 404, 409, 422, 429, 503),
    summary="Register the CPO with an eMSP (OCPI credentials handshake, CPO as client)",
)
async def register_with_emsp(
    body: EmspRegisterIn, cpo: CpoDep, request: Request, settings: SettingsDep
) -> EmspOut:
    """With the eMSP's versions URL and token A: fetch its 2.2.1 endpoints, POST our credentials
    to its credentials module, keep the token it answers (to push to it). Every call goes
    through the egress policy and no database connection is held while one runs. Our token for
    it works during that POST (the eMSP calls our versions back) through a short-lived
    REGISTERING row; the registration itself is one transaction after the calls succeeded, and
    a failure, whatever it is, leaves no row."""
    assert cpo.id is not None
    sessions = sessions_of(request)
    policy = settings.egress_policy()
    async with _slot(request, cpo.id):
        try:
            peer = await fetch_peer(policy, body.versions_url, body.token_a)
            url = peer.credentials_url()
            if url is None:
                raise OcpiError(400, NO_MATCHING_ENDPOINTS, "the eMSP lists no credentials endpoint")
        except OcpiError as err:
            raise _failed(err) from err
        ours = new_token()
        partner_id = await _registering(sessions, settings, cpo.id, body.versions_url, ours)
        done = False
        try:
            answer = await send_credentials(
                policy, "POST", url, body.token_a, our_credentials(settings, cpo, ours)
            )
            theirs = CredentialsIn.model_validate(answer)
            async with sessions() as session:
                partner = await session.get(OcpiPartner, partner_id, with_for_update=True)
                if partner is None or partner.status != "REGISTERING":
                    raise OcpiError(502, UNABLE_TO_USE_CLIENT_API, UNUSABLE)
                apply_credentials(partner, theirs, peer, ours)
                try:
                    await session.commit()
                except IntegrityError as err:
                    raise ApiError(
                        409, "EMSP_ALREADY_REGISTERED", "this eMSP is already registered with this CPO"
                    ) from err
                done = True
        except (OcpiError, ValidationError) as err:
            raise _failed(err) from None  # a ValidationError's text would quote the eMSP's answer
        finally:
            if not done:  # whatever failed, even a cancelled request: no row stays
                await asyncio.shield(_forget(sessions, partner_id))
    return emsp_out(partner)


async def _partner(session: AsyncSession, cpo_id: int, emsp_id: int) -> OcpiPartner:
    partner = (
        await session.execute(
            select(OcpiPartner)
            .where(col(OcpiPartner.id) == emsp_id, col(OcpiPartner.cpo_id) == cpo_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if partner is None or partner.status == "REGISTERING":
        raise ApiError(404, "EMSP_NOT_FOUND", f"no eMSP {emsp_id} for this CPO")
    return partner


@router.patch(
    "/{cpo_id}/emsps/{emsp_id}",
    response_model=EmspOut,
    responses=error_responses(400, 401, 403, 404, 409, 422, 503),
    summary="Suspend an eMSP, or let it in again (CPO or admin)",
)
async def set_emsp_status(
    body: EmspStatusIn,
    cpo: CpoDep,
    emsp_id: EmspIdPath,
    session: SessionDep,
) -> EmspOut:
    """SUSPENDED: its token opens nothing and pushes to it stop; REGISTERED: both resume (changes
    made meanwhile reach it from its next pull with `date_from`, or the next push)."""
    partner = await _partner(session, cpo.id, emsp_id)
    if partner.status not in ("REGISTERED", "SUSPENDED"):
        raise ApiError(409, "EMSP_UNREGISTERED", "this eMSP is unregistered")
    partner.status, partner.updated_at = body.status, utcnow()
    await session.commit()
    return emsp_out(partner)


@router.delete(
    "/{cpo_id}/emsps/{emsp_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Unregister an eMSP (CPO or admin)",
)
async def unregister_emsp(
    cpo: CpoDep,
    emsp_id: EmspIdPath,
    request: Request,
    settings: SettingsDep,
) -> None:
    """Its tokens die and pushes to it stop (the push activity finds it no longer REGISTERED).
    When we registered with it, we also DELETE our credentials at its credentials endpoint,
    best effort and through the egress policy, after our own commit. Idempotent."""
    async with sessions_of(request)() as session:
        partner = await _partner(session, cpo.id, emsp_id)
        if partner.status == "UNREGISTERED":
            return
        url = _credentials_endpoint(partner) if partner.registered_by == "CPO" else None
        their_token = partner.their_token
        partner.status, partner.token_hash, partner.pending_token_hash = "UNREGISTERED", None, None
        partner.their_token, partner.updated_at = None, utcnow()
        await session.commit()
    if url and their_token:
        try:
            await call(settings.egress_policy(), "DELETE", url, their_token)
        except OcpiError:  # best effort: we are unregistered whatever it answers
            log.info("DELETE of our credentials at eMSP %s did not succeed", emsp_id)


def _credentials_endpoint(partner: OcpiPartner) -> str | None:
    """The eMSP's credentials endpoint as its stored version details list it (Receiver first)."""
    return PeerVersion(partner.versions_url, partner.endpoints or []).credentials_url()


@router.post(
    "/{cpo_id}/emsps/{emsp_id}/rotate",
    response_model=EmspOut,
    responses=error_responses(401, 403, 404, 409, 422, 429, 503),
    summary="Rotate our token at an eMSP (OCPI credentials PUT, CPO as client)",
)
async def rotate_emsp_token(
    cpo: CpoDep,
    emsp_id: EmspIdPath,
    request: Request,
    settings: SettingsDep,
) -> EmspOut:
    """A new token for the eMSP to call us with, sent in a credentials PUT to it; it answers
    with the token we call it with from now on. The new token works from the moment we send it
    (the eMSP may call our versions back with it); the old one until the eMSP confirmed."""
    sessions = sessions_of(request)
    ours = new_token()
    async with sessions() as session:
        partner = await _partner(session, cpo.id, emsp_id)
        url = _credentials_endpoint(partner)
        if partner.status != "REGISTERED" or not partner.their_token or url is None:
            raise ApiError(409, "EMSP_NOT_ROTATABLE", "only a registered eMSP with a credentials endpoint")
        their_token = partner.their_token
        partner.pending_token_hash = sha256_hex(ours)
        await session.commit()
    try:
        async with _slot(request, cpo.id):
            answer = await send_credentials(
                settings.egress_policy(), "PUT", url, their_token, our_credentials(settings, cpo, ours)
            )
            theirs = CredentialsIn.model_validate(answer)
    except (OcpiError, ValidationError) as err:
        async with sessions() as session:
            await session.execute(
                update(OcpiPartner).where(col(OcpiPartner.id) == emsp_id).values(pending_token_hash=None)
            )
            await session.commit()
        raise _failed(err) from None
    async with sessions() as session:
        partner = await _partner(session, cpo.id, emsp_id)
        partner.token_hash, partner.pending_token_hash = sha256_hex(ours), None
        partner.their_token, partner.updated_at = theirs.token, utcnow()
        await session.commit()
    return emsp_out(partner)
