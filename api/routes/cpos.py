"""CPOs: created by the admin; each gets its own bearer token, shown once."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, status
from sqlalchemy.exc import IntegrityError

from api.deps import Principal, SessionDep, require_admin
from api.problems import ApiError, error_responses
from api.schemas import CpoCreated, CpoIn, Party
from contracts.ids import sha256_hex
from db.models import ApiToken, PartnerOperation

router = APIRouter(prefix="/ocpi/cpos", tags=["CPOs"])


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=CpoCreated,
    responses=error_responses(400, 401, 403, 409, 422, 503),
    summary="Create a CPO (admin)",
)
async def create_cpo(
    body: CpoIn, session: SessionDep, _: Annotated[Principal, Depends(require_admin)]
) -> CpoCreated:
    """A CPO is a row of `ocpp.partner_operations`, which is also its network."""
    token = f"cpo_{secrets.token_urlsafe(32)}"
    cpo = PartnerOperation(name=body.name, country_code=body.country_code, party_id=body.party_id)
    session.add(cpo)
    try:
        await session.flush()
        assert cpo.id is not None
        session.add(ApiToken(cpo_id=cpo.id, token_hash=sha256_hex(token)))
        await session.commit()
    except IntegrityError as err:
        await session.rollback()
        raise ApiError(409, "CPO_EXISTS",
                       f"a CPO with party {body.country_code}*{body.party_id} exists") from err
    return CpoCreated(
        cpo_id=str(cpo.id), name=cpo.name,
        party=Party(country_code=cpo.country_code, party_id=cpo.party_id), token=token,
        created_at=cpo.created_at,
    )
