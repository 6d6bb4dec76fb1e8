"""A CPO's completion webhook: the default URL its jobs' completion callbacks go to, and the
secret that signs every callback of its jobs (also those sent to a bulk POST's `callback_url`).

The secret is returned once, by the PUT that creates it; each PUT issues a new one (rotation).
It is stored as issued, not hashed: the worker needs it to sign (docs/api.md, "Completion callbacks").
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Response, status
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col

from api.deps import CpoDep, SessionDep
from api.problems import ApiError, error_responses
from api.schemas import WebhookIn, WebhookIssued, WebhookOut
from db.models import CpoWebhook, utcnow

router = APIRouter(prefix="/ocpi/cpos/{cpo_id}/webhook", tags=["Webhooks"])


@router.put(
    "",
    response_model=WebhookIssued,
    responses=error_responses(400, 401, 403, 404, 422, 503),
    summary="Set the CPO's completion webhook (issues a new signing secret)",
)
async def put_webhook(body: WebhookIn, cpo: CpoDep, session: SessionDep) -> WebhookIssued:
    """Sets the URL and issues a new secret (shown only in this answer; the previous one stops
    signing at once). Where the URL leads is checked when a callback is delivered."""
    secret = f"whsec_{secrets.token_urlsafe(32)}"
    now = utcnow()
    row = (
        await session.execute(
            insert(CpoWebhook)
            .values(cpo_id=cpo.id, url=body.url, secret=secret, created_at=now, updated_at=now)
            .on_conflict_do_update(
                index_elements=["cpo_id"], set_={"url": body.url, "secret": secret, "updated_at": now}
            )
            .returning(col(CpoWebhook.created_at), col(CpoWebhook.updated_at))
        )
    ).one()
    await session.commit()
    return WebhookIssued(url=body.url, secret=secret, created_at=row[0], updated_at=row[1])


@router.get(
    "",
    response_model=WebhookOut,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Get the CPO's completion webhook (without its secret)",
)
async def get_webhook(cpo: CpoDep, session: SessionDep) -> WebhookOut:
    hook = await session.get(CpoWebhook, cpo.id)
    if hook is None:
        raise ApiError(404, "WEBHOOK_NOT_FOUND", f"CPO {cpo.id} has no webhook")
    return WebhookOut(url=hook.url, created_at=hook.created_at, updated_at=hook.updated_at)


@router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Remove the CPO's completion webhook and its secret",
)
async def delete_webhook(cpo: CpoDep, session: SessionDep) -> Response:
    """Idempotent. Callbacks not yet delivered are not sent any more (nothing signs them)."""
    await session.execute(delete(CpoWebhook).where(col(CpoWebhook.cpo_id) == cpo.id))
    await session.commit()
    return Response(status_code=204)
