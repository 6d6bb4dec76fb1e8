"""The normalized form of one requested location, as stored in `job_locations.input`.

The API produces it (after validation, with country as alpha-3, coordinates as 6-decimal strings,
a timezone always set and template chargers expanded); the first activity of a child reads it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class NormalizedCharger(BaseModel):
    identity: str
    vendor: str
    model: str
    ocpp_version: str
    connector_type: str
    max_power_kw: float
    evses: int = Field(ge=1)


class NormalizedLocation(BaseModel):
    name: str
    address: str
    city: str
    postal_code: str | None = None
    state: str | None = None
    country: str = Field(description="ISO-3166 alpha-3, as OCPI stores it")
    latitude: str
    longitude: str
    time_zone: str
    publish: bool = True
    owner_name: str | None = None
    parking_type: str | None = None
    facilities: list[str] | None = None
    template: str | None = None
    chargers: list[NormalizedCharger] = Field(default_factory=list)
