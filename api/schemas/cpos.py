"""CPOs, their API tokens, OCPI token A and their eMSPs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import pycountry
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.fields import Text255, _text


class CpoIn(BaseModel):
    name: Text255
    country_code: str = Field(min_length=2, max_length=2, description="ISO-3166 alpha-2")
    party_id: str = Field(pattern=r"^[A-Za-z0-9]{3}$", description="OCPI party id, 3 characters")

    @field_validator("country_code")
    @classmethod
    def _alpha2(cls, value: str) -> str:
        if pycountry.countries.get(alpha_2=value.upper()) is None:
            raise ValueError(f"{value!r} is not an ISO-3166 alpha-2 country code")
        return value.upper()

    @field_validator("party_id")
    @classmethod
    def _party(cls, value: str) -> str:
        return value.upper()


class Party(BaseModel):
    country_code: str
    party_id: str
    role: Literal["CPO"] = "CPO"


class CpoCreated(BaseModel):
    cpo_id: str
    name: str
    party: Party
    token: str = Field(description="the CPO's bearer token; shown once, stored hashed")
    token_a: str = Field(description="OCPI 2.2.1 token A for one eMSP to register with; shown once")
    ocpi_peer_url: str = Field(description="the CPO's OCPI versions URL, for its eMSPs")
    created_at: datetime


class TokenIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"label": "CI", "expires_in_days": 90}}
    )

    label: Annotated[str, _text(100)] | None = None
    expires_in_days: int | None = Field(default=None, ge=1, le=3650, description="none: no expiry")


class TokenOut(BaseModel):
    token_id: str
    label: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenIssued(TokenOut):
    token: str = Field(description="the bearer token; shown once, stored hashed")


class TokenList(BaseModel):
    data: list[TokenOut]


class TokenAOut(BaseModel):
    cpo_id: str
    token_a_id: str = Field(description="to list or revoke it (GET/DELETE /ocpi/cpos/{cpo_id}/token_a)")
    token_a: str = Field(description="a new OCPI token A, good for one registration; shown once")
    ocpi_peer_url: str
    created_at: datetime
    expires_at: datetime = Field(description="it opens nothing after this (ocpi_token_a_ttl_seconds)")


class TokenAInfo(BaseModel):
    token_a_id: str
    state: Literal["ACTIVE", "USED", "EXPIRED", "REVOKED"]
    created_at: datetime
    expires_at: datetime | None
    used_at: datetime | None
    revoked_at: datetime | None


class EmspRegisterIn(BaseModel):
    """What an eMSP gave the CPO out of band: its OCPI versions URL and a token A."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"versions_url": "https://emsp.example.com/ocpi/versions", "token_a": "3f1c…"}
        }
    )

    versions_url: str = Field(min_length=10, max_length=255, pattern=r"^https?://[\x21-\x7e]+$")
    token_a: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")


class EmspStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"status": "SUSPENDED"}})

    status: Literal["SUSPENDED", "REGISTERED"]


class EmspOut(BaseModel):
    id: str
    country_code: str | None
    party_id: str | None
    role: str
    name: str | None
    versions_url: str
    version: str
    status: str
    created_at: datetime
    updated_at: datetime
