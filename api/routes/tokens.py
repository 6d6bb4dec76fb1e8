"""A CPO's bearer tokens, for the admin: issue another (a lost 201, or a rotation), list them
(never their secrets), revoke one. Several may be valid at once; each may expire."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status
from sqlalchemy import select, update
from sqlmodel import col

from api.deps import CpoDep, Principal, ReadCacheDep, SessionDep, require_admin
from api.problems import ApiError, error_responses
from api.schemas import TokenIn, TokenIssued, TokenList, TokenOut
from contracts.ids import sha256_hex
from db.models import ApiToken, utcnow

router = APIRouter(prefix="/ocpi/cpos/{cpo_id}/tokens", tags=["CPOs"])
AdminDep = Annotated[Principal, Depends(require_admin)]
TokenIdPath = Annotated[int, Path(ge=1, le=2**62, description="the token_id returned when it was issued")]


def _out(row: ApiToken) -> TokenOut:
    assert row.id is not None
    return TokenOut(
        token_id=str(row.id),
        label=row.label,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenIssued,
    responses=error_responses(400, 401, 403, 404, 422, 503),
    summary="Issue another bearer token for a CPO (admin)",
)
async def issue_token(body: TokenIn, cpo: CpoDep, session: SessionDep, _: AdminDep) -> TokenIssued:
    """The token is shown once (stored as its SHA-256). The CPO's other tokens stay valid until
    revoked: issue, move the clients, then revoke the old one."""
    token = f"cpo_{secrets.token_urlsafe(32)}"
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    row = ApiToken(cpo_id=cpo.id, token_hash=sha256_hex(token), label=body.label, expires_at=expires)
    session.add(row)
    await session.commit()
    return TokenIssued(token=token, **_out(row).model_dump())


@router.get(
    "",
    response_model=TokenList,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="List a CPO's bearer tokens (admin)",
)
async def list_tokens(cpo: CpoDep, session: SessionDep, _: AdminDep) -> TokenList:
    rows = (
        (
            await session.execute(
                select(ApiToken).where(col(ApiToken.cpo_id) == cpo.id).order_by(col(ApiToken.id))
            )
        )
        .scalars()
        .all()
    )
    return TokenList(data=[_out(row) for row in rows])


@router.delete(
    "/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Revoke a CPO's bearer token (admin)",
)
async def revoke_token(
    token_id: TokenIdPath, cpo: CpoDep, session: SessionDep, cache: ReadCacheDep, _: AdminDep
) -> Response:
    """From now on the token opens nothing (on the other API processes within
    `auth_cache_seconds`). Revoking a revoked token is harmless (204)."""
    found = (
        await session.execute(
            update(ApiToken)
            .where(col(ApiToken.id) == token_id, col(ApiToken.cpo_id) == cpo.id)
            .values(revoked_at=utcnow())
            .returning(col(ApiToken.id), col(ApiToken.revoked_at))
        )
    ).first()
    if found is None:
        raise ApiError(404, "TOKEN_NOT_FOUND", f"no token {token_id} under CPO {cpo.id}")
    await session.commit()
    cache.tokens.clear()
    return Response(status_code=204)
