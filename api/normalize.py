"""From a validated request to what `job_locations.input` stores, plus the checks that span
locations (charger identities unique within the request and within the CPO)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json
from timezonefinder import TimezoneFinder

from api.creation_reads import CreationReads
from api.problems import FieldError
from api.schemas import LocationIn, country_alpha3
from db.catalog import location_templates
from db.job_input import NormalizedCharger


@lru_cache(maxsize=1)
def _tz_finder() -> TimezoneFinder:
    return TimezoneFinder()


def timezone_for(latitude: float, longitude: float) -> str:
    return _tz_finder().timezone_at(lat=latitude, lng=longitude) or "UTC"


# API field -> OCPI column, where the names differ
RENAMED = {"public": "publish", "timezone": "time_zone"}


def ocpi_columns(fields: dict[str, Any]) -> dict[str, Any]:
    """API fields (validated) as the OCPI columns store them, for create and PATCH alike:
    coordinates as 6-decimal strings, country as alpha-3, `public` as `publish`, `timezone` as
    `time_zone`, and a time zone derived from new coordinates when none is given."""
    columns: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "coordinates":
            columns["latitude"] = f"{value['latitude']:.6f}"
            columns["longitude"] = f"{value['longitude']:.6f}"
        elif key == "country":
            columns["country"] = country_alpha3(value)
        else:
            columns[RENAMED.get(key, key)] = value
    if "coordinates" in fields and fields.get("timezone") is None:
        columns["time_zone"] = timezone_for(
            fields["coordinates"]["latitude"], fields["coordinates"]["longitude"]
        )
    return columns


def template_chargers(slug: str, job_id: str, index: int) -> list[NormalizedCharger]:
    """A template's charger groups, with identities derived from the job and the index (unique
    within the CPO because job ids are)."""
    chargers: list[NormalizedCharger] = []
    for group in location_templates()[slug].charger_groups:
        for _ in range(group.count):
            chargers.append(
                NormalizedCharger(
                    identity=f"{slug}-{job_id[4:16]}-{index}-{len(chargers) + 1}",
                    vendor=group.brand[:20],
                    model=group.model[:20],
                    ocpp_version=group.ocpp_version,
                    connector_type=group.connector_type,
                    max_power_kw=group.max_power_kw,
                    evses=group.evses,
                    capabilities=list(group.capabilities),
                )
            )
    return chargers


def normalized_json(loc: LocationIn, job_id: str, index: int) -> str:
    """`job_locations.input` of one location: the JSON of a `NormalizedLocation`.

    Built as plain data and serialized once, not through a `NormalizedLocation` instance: every
    value is already validated, and building that model was the larger part of normalizing. The
    chargers go in as their models (`to_json` serializes them by their own schema, no dict in
    between). The reader (`write_location_rows`) validates it with the model, and a test holds
    the two to the same shape."""
    chargers: Sequence[BaseModel] = (
        template_chargers(loc.template, job_id, index) if loc.template else loc.chargers or []
    )
    coordinates = {"latitude": loc.coordinates.latitude, "longitude": loc.coordinates.longitude}
    columns = ocpi_columns(
        {"coordinates": coordinates, "country": loc.country, "timezone": loc.timezone, "public": loc.public}
    )
    return to_json(
        {
            "name": loc.name,
            "address": loc.address,
            "city": loc.city,
            "postal_code": loc.postal_code,
            "state": loc.state,
            "country": columns["country"],
            "latitude": columns["latitude"],
            "longitude": columns["longitude"],
            "time_zone": columns["time_zone"],
            "publish": columns["publish"],
            "owner_name": loc.owner_name,
            "parking_type": loc.parking_type.value if loc.parking_type else None,
            "facilities": [f.value for f in loc.facilities] if loc.facilities else None,
            "twentyfourseven": loc.twentyfourseven,
            "template": loc.template,
            "chargers": chargers,
        }
    ).decode()


def requested_identities(
    locations: Iterable[tuple[int, LocationIn]],
) -> tuple[dict[str, str], list[FieldError]]:
    """The explicit chargers' identities (of the locations, each with its index in the request),
    each with the field that first names it, and a problem for each repeat within the request."""
    seen: dict[str, str] = {}
    repeats: list[FieldError] = []
    for i, loc in locations:
        for j, charger in enumerate(loc.chargers or []):
            field = f"locations[{i}].chargers[{j}].identity"
            if charger.identity in seen:
                repeats.append(
                    FieldError(
                        field=field,
                        type="duplicate_identity",
                        message=f"identity {charger.identity!r} repeats {seen[charger.identity]}",
                    )
                )
            else:
                seen[charger.identity] = field
    return seen, repeats


def identity_conflicts(reads: CreationReads, seen: dict[str, str]) -> list[FieldError]:
    """A problem for each identity (-> the field that names it) that exists in the CPO, or
    belongs to a location of a running job of the CPO that has no outcome yet."""
    return [
        FieldError(
            field=seen[identity],
            type="identity_taken",
            message=f"identity {identity!r} already exists in this CPO's network",
        )
        for identity in sorted(reads.existing)
    ] + [
        FieldError(
            field=seen[identity],
            type="identity_taken",
            message=f"identity {identity!r} is being provisioned by a running job of this CPO",
        )
        for identity in sorted(reads.claimed)
    ]
