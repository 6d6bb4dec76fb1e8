"""What `job_locations.input` holds for a validated location: the shape the first activity of a
child reads back with `NormalizedLocation` (the API builds it as plain data, for speed)."""

from __future__ import annotations

from api.normalize import normalized_json
from api.schemas import LocationIn
from db.catalog import location_templates
from db.job_input import NormalizedCharger, NormalizedLocation

JOB = "job-0123456789abcdef0123456789abcdef"


def test_explicit_chargers_and_every_optional_field() -> None:
    loc = LocationIn.model_validate(
        {
            "name": "Gare Centrale",
            "address": "Carrefour de l'Europe 2",
            "city": "Brussels",
            "postal_code": "1000",
            "state": "BXL",
            "country": "BE",
            "owner_name": "SNCB",
            "coordinates": {"latitude": 50.8454, "longitude": 4.357},
            "public": False,
            "parking_type": "PARKING_GARAGE",
            "facilities": ["TRAIN_STATION", "CAFE"],
            "chargers": [
                {"identity": "GC-1"},
                {
                    "identity": "GC-2",
                    "max_power_kw": 150,
                    "evses": 2,
                    "connector_type": "CCS2",
                    "ocpp_version": "OCPP2.0.1",
                },
            ],
        }
    )
    stored = NormalizedLocation.model_validate_json(normalized_json(loc, JOB, 7))
    assert stored == NormalizedLocation(
        name="Gare Centrale",
        address="Carrefour de l'Europe 2",
        city="Brussels",
        postal_code="1000",
        state="BXL",
        country="BEL",
        latitude="50.845400",
        longitude="4.357000",
        time_zone="Europe/Brussels",  # derived from the coordinates
        publish=False,
        owner_name="SNCB",
        parking_type="PARKING_GARAGE",
        facilities=["TRAIN_STATION", "CAFE"],
        template=None,
        chargers=[
            NormalizedCharger(
                identity="GC-1",
                vendor="OCPPLAB",
                model="Simulator",
                ocpp_version="OCPP1.6",
                connector_type="Type2",
                max_power_kw=22.0,
                evses=1,
            ),
            NormalizedCharger(
                identity="GC-2",
                vendor="OCPPLAB",
                model="Simulator",
                ocpp_version="OCPP2.0.1",
                connector_type="CCS2",
                max_power_kw=150.0,
                evses=2,
            ),
        ],
    )


def test_a_template_expands_to_chargers_named_after_the_job_and_index() -> None:
    slug, template = next(iter(location_templates().items()))
    loc = LocationIn.model_validate(
        {
            "name": "Templated",
            "address": "Rue Neuve 1",
            "city": "Brussels",
            "country": "BEL",
            "coordinates": {"latitude": 50.85, "longitude": 4.35},
            "timezone": "Europe/Brussels",
            "template": slug,
        }
    )
    stored = NormalizedLocation.model_validate_json(normalized_json(loc, JOB, 3))
    expected = sum(group.count for group in template.charger_groups)
    assert stored.template == slug and stored.country == "BEL" and stored.publish is True
    assert [c.identity for c in stored.chargers] == [
        f"{slug}-{JOB[4:16]}-3-{n}" for n in range(1, expected + 1)
    ]
    first = template.charger_groups[0]
    assert stored.chargers[0].vendor == first.brand[:20]
    assert stored.chargers[0].ocpp_version == first.ocpp_version
