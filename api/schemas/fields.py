"""Field types and checks shared by the request models: OCPI 2.2.1 text, countries, time
zones, coordinates."""

from __future__ import annotations

import zoneinfo
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any

import pycountry
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# OCPI "string": printable text; no control characters.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


def _text(max_length: int) -> StringConstraints:
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length, pattern=PRINTABLE)


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
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=48, pattern=r"^[A-Za-z0-9._:*\-]+$"),
]


# http(s) only, printable, no spaces; where it may lead is checked when it is called
CallbackUrl = Annotated[
    str, StringConstraints(max_length=2048, pattern=r"^[hH][tT][tT][pP][sS]?://[\x21-\x7e]+$")
]
