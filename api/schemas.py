"""Request and response models; the request side validates as OCPI 2.2.1 does."""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal

import pycountry
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from contracts.vocabulary import JobStatus
from db.catalog import CONNECTOR_TYPES, DECLARABLE_CAPABILITIES, OCPP_VERSIONS, location_templates

# OCPI "string": printable text; no control characters.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


def _text(max_length: int) -> StringConstraints:
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length,
                             pattern=PRINTABLE)


Text10 = Annotated[str, _text(10)]
Text20 = Annotated[str, _text(20)]
Text45 = Annotated[str, _text(45)]
Text100 = Annotated[str, _text(100)]  # OCPI BusinessDetails.name
Text255 = Annotated[str, _text(255)]


class ParkingType(StrEnum):
    ALONG_MOTORWAY = "ALONG_MOTORWAY"
    PARKING_GARAGE = "PARKING_GARAGE"
    PARKING_LOT = "PARKING_LOT"
    ON_DRIVEWAY = "ON_DRIVEWAY"
    ON_STREET = "ON_STREET"
    UNDERGROUND_GARAGE = "UNDERGROUND_GARAGE"


class Facility(StrEnum):
    HOTEL = "HOTEL"
    RESTAURANT = "RESTAURANT"
    CAFE = "CAFE"
    MALL = "MALL"
    SUPERMARKET = "SUPERMARKET"
    SPORT = "SPORT"
    RECREATION_AREA = "RECREATION_AREA"
    NATURE = "NATURE"
    MUSEUM = "MUSEUM"
    BIKE_SHARING = "BIKE_SHARING"
    BUS_STOP = "BUS_STOP"
    TAXI_STAND = "TAXI_STAND"
    TRAM_STOP = "TRAM_STOP"
    METRO_STATION = "METRO_STATION"
    TRAIN_STATION = "TRAIN_STATION"
    AIRPORT = "AIRPORT"
    PARKING_LOT = "PARKING_LOT"
    CARPOOL_PARKING = "CARPOOL_PARKING"
    FUEL_STATION = "FUEL_STATION"
    WIFI = "WIFI"


@lru_cache(maxsize=1024)  # pycountry's look-up was 40 % of validating a 10,000-location body
def country_alpha3(value: str) -> str:
    """ISO-3166 alpha-2 or alpha-3, any case -> alpha-3 (what OCPI stores)."""
    code = value.strip().upper()
    country = None
    if len(code) == 2:
        country = pycountry.countries.get(alpha_2=code)
    elif len(code) == 3:
        country = pycountry.countries.get(alpha_3=code)
    if country is None:
        raise ValueError(f"{value!r} is not an ISO-3166 alpha-2 or alpha-3 country code")
    return str(country.alpha_3)


def country_alpha2(alpha3: str) -> str:
    country = pycountry.countries.get(alpha_3=alpha3)
    return str(country.alpha_2) if country else alpha3


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_country(value: str | None) -> str | None:
    if value is not None:
        country_alpha3(value)
        return value.strip().upper()
    return value


def check_timezone(value: str | None) -> str | None:
    if value is not None and value not in _timezones():
        raise ValueError(f"{value!r} is not an IANA time zone name")
    return value


class Coordinates(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"latitude": 50.8357, "longitude": 4.3353}})

    # JSON numbers only (as the reference's example), not numeric strings
    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False, strict=True)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False, strict=True)

    @field_validator("latitude", "longitude", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        return value


Identity = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=48,
                           pattern=r"^[A-Za-z0-9._:*\-]+$")
]


class ChargerIn(BaseModel):
    identity: Identity = Field(description="OCPP charge point identity, unique within the CPO")
    vendor: Text20 = "OCPPLAB"
    model: Text20 = "Simulator"
    ocpp_version: Literal[OCPP_VERSIONS] = "OCPP1.6"  # type: ignore[valid-type]
    connector_type: Literal[tuple(CONNECTOR_TYPES)] = "Type2"  # type: ignore[valid-type]
    max_power_kw: float = Field(default=22.0, gt=0, le=1000, allow_inf_nan=False, strict=True)
    evses: int = Field(default=1, ge=1, le=8, strict=True, description="EVSEs (one connector each)")
    capabilities: list[Literal[DECLARABLE_CAPABILITIES]] = Field(  # type: ignore[valid-type]
        default_factory=list, max_length=len(DECLARABLE_CAPABILITIES),
        description="OCPI EVSE capabilities the hardware offers on its own (payment terminals, "
                    "card readers). Nothing is claimed unless declared; capabilities that need a "
                    "Commands, Tokens or SmartCharging module are not offered by this gateway.")



# http(s) only, printable, no spaces; where it may lead is checked when it is called
CallbackUrl = Annotated[str, StringConstraints(max_length=2048, pattern=r"^[hH][tT][tT][pP][sS]?://[\x21-\x7e]+$")]


class LocationIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "name": "Brussels Midi Hub", "address": "Place Victor Horta 1",
                "city": "Brussels", "country": "BE",
                "coordinates": {"latitude": 50.8357, "longitude": 4.3353}, "public": True,
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
        default=None, strict=True,
        description="open around the clock (OCPI opening_times.twentyfourseven); absent: no claim")
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


class BulkCreateRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "locations": [
                    {
                        "name": "Brussels Midi Hub", "address": "Place Victor Horta 1",
                        "city": "Brussels", "country": "BE",
                        "coordinates": {"latitude": 50.8357, "longitude": 4.3353}, "public": True,
                    }
                ]
            }
        }
    )

    locations: list[LocationIn] = Field(min_length=1)
    callback_url: CallbackUrl | None = Field(
        default=None, description="where this job's completion callback goes (instead of the CPO's "
        "webhook URL); signed with the CPO's webhook secret, so the CPO must have one (PUT …/webhook)")


class BulkCreateAccepted(BaseModel):
    job_id: str
    status: JobStatus
    status_url: str
    workflow_run_id: str | None
    retry_of: str | None = Field(default=None, description="the job this one retries, if any")


class DryRunProblem(BaseModel):
    index: int | None = Field(description="the location's index in `locations`; null for the body")
    field: str = Field(description="e.g. `locations[3].address`")
    code: str = Field(description="stable: the validator's type, or duplicate_identity, identity_taken…")
    message: str


class DryRunResult(BaseModel):
    """`valid: false` with every problem at once, or `valid: true` with what the POST would do."""

    valid: bool
    problems: list[DryRunProblem] = Field(default_factory=list)
    locations: int | None = None
    chargers: int | None = None
    timezones_derived: int | None = Field(
        default=None, description="locations without a `timezone`, which is derived from coordinates")
    timezones: dict[str, int] | None = Field(default=None, description="time zone -> locations")
    templates_used: dict[str, int] | None = Field(default=None, description="template slug -> locations")


class JobSummary(BaseModel):
    job_id: str
    status: JobStatus
    progress: JobProgressOut
    created_at: datetime
    ended_at: datetime | None = Field(description="when the job ended (READY: provisioned_at)")
    idempotency_key: str | None
    retry_of: str | None
    retries: list[str] = Field(description="ids of the jobs that retried this one, oldest first")


class JobPage(BaseModel):
    data: list[JobSummary]
    total: int
    page: int
    limit: int


class CallbackStatus(BaseModel):
    url: str
    event_id: str
    attempts: int
    last_status: str | None = Field(description="HTTP status of the last attempt, or why it failed")
    last_attempt_at: datetime | None
    delivered_at: datetime | None


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"example": {"url": "https://cpo.example.com/hooks/ocpplab"}})

    url: CallbackUrl


class WebhookOut(BaseModel):
    url: str
    created_at: datetime
    updated_at: datetime


class WebhookIssued(WebhookOut):
    secret: str = Field(description="signs every callback (Ocpplab-Signature); shown once")


class JobError(BaseModel):
    code: str
    message: str
    retryable: bool


class JobProgressOut(BaseModel):
    total: int
    succeeded: int
    failed: int
    in_progress: int


class JobLocationResult(BaseModel):
    index: int
    origin_index: int = Field(description="the location's index in the request that first carried "
                              "it (a retry job's locations keep their original index here)")
    name: str | None
    status: str
    location_id: str | None
    charger_ids: list[str]
    error: JobError | None


class JobResults(BaseModel):
    """One page of the job's locations (by index): a 10,000-location job answers in pages."""

    location_ids: list[str] = Field(description="ids of this page's READY locations")
    locations: list[JobLocationResult]
    page: int = Field(description="one-based page of results (`?page=`)")
    limit: int = Field(description="locations per page (`?limit=`)")
    total: int = Field(description="locations in the job")


class JobStatusOut(BaseModel):
    job_id: str
    job_type: str
    status: JobStatus
    workflow_run_id: str | None
    error: JobError | None
    progress: JobProgressOut
    results: JobResults | None = Field(
        description="null while the job runs; once it ends, one page of its locations"
    )
    provisioned_at: datetime | None
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None = None
    retry_of: str | None = Field(default=None, description="the job this one retries")
    retries: list[str] = Field(default_factory=list, description="the jobs that retried this one")
    callback: CallbackStatus | None = Field(
        default=None, description="the completion callback, once the job has ended and one is due")


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
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"example": {"label": "CI", "expires_in_days": 90}})

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

    model_config = ConfigDict(json_schema_extra={"example": {
        "versions_url": "https://emsp.example.com/ocpi/versions", "token_a": "3f1c…"}})

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
        default=None, strict=True,
        description="open around the clock (OCPI opening_times.twentyfourseven); absent: no claim")

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
