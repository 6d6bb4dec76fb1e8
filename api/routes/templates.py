"""The catalog of location templates a bulk-create location may name with `template`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from api.deps import Principal, get_principal
from api.problems import error_responses
from api.schemas import TemplateOut
from db.catalog import location_templates

router = APIRouter(prefix="/ocpp/templates", tags=["Templates"])


@router.get(
    "/locations",
    response_model=list[TemplateOut],
    responses=error_responses(401, 503),
    summary="List location templates",
)
async def list_location_templates(_: Annotated[Principal, Depends(get_principal)]) -> list[TemplateOut]:
    return [
        TemplateOut(
            slug=t.slug,
            name=t.name,
            site_type=t.site_type,
            description=t.description,
            charger_groups=[g.model_dump() for g in t.charger_groups],
            chargers=sum(g.count for g in t.charger_groups),
        )
        for t in location_templates().values()
    ]
