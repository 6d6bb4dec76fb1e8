"""A CPO's completion-callback webhook."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.fields import CallbackUrl


class WebhookIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"url": "https://cpo.example.com/hooks/ocpplab"}}
    )

    url: CallbackUrl


class WebhookOut(BaseModel):
    url: str
    created_at: datetime
    updated_at: datetime


class WebhookIssued(WebhookOut):
    secret: str = Field(description="signs every callback (Ocpplab-Signature); shown once")
