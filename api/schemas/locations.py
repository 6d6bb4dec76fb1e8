"""A location and its chargers: the bulk body's items, PATCH, reads, templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.schemas.fields import (
    Coordinates,
    Facility,
    Identity,
    ParkingType,
    Text10,
    Text20,
    Text45,
    Text100,
    Text255,
    check_country,
    check_timezone,
)
from db.catalog import CONNECTOR_TYPES, DECLARABLE_CAPABILITIES, OCPP_VERSIONS, location_templates


class ChargerIn(BaseModel):
    identity: Identity = Field(description="OCPP charge point identity, unique within the CPO")
    vendor: Text20 = "OCPPLAB"
    model: Text20 = "Simulator"
    ocpp_version: Literal[OCPP_VERSIONS] = "OCPP1.6"  # type: ignore[valid-type]
    connector_type: Literal[tuple(CONNECTOR_TYPES)] = "Type2"  # type: ignore[valid-type]
    max_power_kw: float = Field(default=22.0, gt=0, le=1000, allow_inf_nan=False, strict=True)
    evses: int = Field(default=1, ge=1, le=8, strict=True, description="EVSEs (one connector each)")
    capabilities: list[Literal[DECLARABLE_CAPABILITIES]] = Field(  # type: ignore[valid-type]
        default_factory=list,
        max_length=len(DECLARABLE_CAPABILITIES),
        description="OCPI EVSE capabilities the hardware offers on its own (payment terminals, "
        "card readers). Nothing is claimed unless declared; capabilities that need a "
        "Commands, Tokens or SmartCharging module are not offered by this gateway.",
    )


class LocationIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "name": "Brussels Midi Hub",
                "address": "Place Victor Horta 1",
                "city": "Brussels",
                "country": "BE",
                "coordinates": {"latitude": 50.8357, "longitude": 4.3353},
                "public": True,
            }
        }
    )

    name: Text255
    address: Text45
    city: Text45
    postal_code: Text10 | None = None
    state: Text20 | None = None
    country: str = Field(description="ISO-3166 alpha-2 or alpha-3", min_length=2, max_length=3)
    coordinates: Coordinates
    public: bool = Field(default=True, strict=True)  # JSON true/false only, not "yes" or 1
    timezone: str | None = Field(default=None, description="IANA name; derived from coordinates when absent")
    owner_name: Text100 | None = None
    parking_type: ParkingType | None = None
    facilities: list[Facility] | None = Field(default=None, max_length=20)
    twentyfourseven: bool | None = Field(
        default=None,
        strict=True,
        description="open around the clock (OCPI opening_times.twentyfourseven); absent: no claim",
    )
    template: str | None = Field(default=None, description="slug of a location template")
    chargers: list[ChargerIn] | None = Field(default=None, max_length=100)

    _country = field_validator("country")(check_country)
    _timezone = field_validator("timezone")(check_timezone)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and value not in location_templates():
            raise ValueError(f"unknown template {value!r}; see GET /ocpp/templates/locations")
        return value

    @model_validator(mode="after")
    def _template_xor_chargers(self) -> LocationIn:
        if self.template is not None and self.chargers:
            raise ValueError("give either template or chargers, not both")
        return self


class CoordinatesOut(BaseModel):
    latitude: float
    longitude: float


class ChargerOut(BaseModel):
    id: str = Field(description="the charger's deployment id (dep-…)")
    identity: str
    connector_type: str
    ocpp_version: str
    status: str


class LocationOut(BaseModel):
    id: str
    ocpp_location_id: str | None
    slug: str | None
    name: str
    address: str
    city: str
    postal_code: str | None
    state: str | None
    country: str = Field(description="ISO-3166 alpha-2 (OCPI's alpha-3 is what is stored)")
    coordinates: CoordinatesOut
    timezone: str
    owner_name: str | None
    public: bool
    twentyfourseven: bool | None = None
    status: str
    chargers: list[ChargerOut]
    created_at: datetime
    updated_at: datetime


class LocationPatchIn(BaseModel):
    """Every field optional; the ones sent are validated as on create. Chargers are not edited
    here (unknown fields are refused so that a `chargers` key does not silently do nothing)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"name": "Brussels Midi Hub (P2)"}}
    )

    name: Text255 | None = None
    address: Text45 | None = None
    city: Text45 | None = None
    postal_code: Text10 | None = None
    state: Text20 | None = None
    country: str | None = Field(default=None, min_length=2, max_length=3)
    coordinates: Coordinates | None = None
    public: bool | None = Field(default=None, strict=True)
    timezone: str | None = None
    owner_name: Text100 | None = None
    parking_type: ParkingType | None = None
    facilities: list[Facility] | None = Field(default=None, max_length=20)
    twentyfourseven: bool | None = Field(
        default=None,
        strict=True,
        description="open around the clock (OCPI opening_times.twentyfourseven); absent: no claim",
    )

    _country = field_validator("country")(check_country)
    _timezone = field_validator("timezone")(check_timezone)


class LocationPage(BaseModel):
    data: list[LocationOut]
    total: int
    page: int
    limit: int


class UpdateAccepted(BaseModel):
    location_id: str
    status: Literal["UPDATING"] = "UPDATING"
    workflow_id: str


class DecommissionAccepted(BaseModel):
    location_id: str
    status: Literal["DECOMMISSIONING"] = "DECOMMISSIONING"
    workflow_id: str


class TemplateOut(BaseModel):
    slug: str
    name: str
    site_type: str
    description: str
    charger_groups: list[dict[str, Any]]
    chargers: int
