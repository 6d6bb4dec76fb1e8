"""Domain data shared by the API (validation) and the activities (rows): connector standards and
the catalog of location templates shipped as `location_templates.json`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

OCPP_VERSIONS = ("OCPP1.6", "OCPP2.0.1")


@dataclass(frozen=True)
class ConnectorSpec:
    """How a charger's connector type reads in OCPI 2.2.1 (standard, format, power type).

    `max_voltage` is what OCPI 2.2.1 means by it: line to neutral for AC_3_PHASE (230 V in
    Europe, not the 400 V between phases)."""

    standard: str
    format: str
    power_type: str
    max_voltage: int


CONNECTOR_TYPES: dict[str, ConnectorSpec] = {
    "Type1": ConnectorSpec("IEC_62196_T1", "CABLE", "AC_1_PHASE", 230),
    "Type2": ConnectorSpec("IEC_62196_T2", "SOCKET", "AC_3_PHASE", 230),
    "CCS1": ConnectorSpec("IEC_62196_T1_COMBO", "CABLE", "DC", 1000),
    "CCS2": ConnectorSpec("IEC_62196_T2_COMBO", "CABLE", "DC", 1000),
    "CHAdeMO": ConnectorSpec("CHADEMO", "CABLE", "DC", 500),
    "NACS": ConnectorSpec("TESLA_S", "CABLE", "DC", 1000),
    "Schuko": ConnectorSpec("DOMESTIC_F", "SOCKET", "AC_1_PHASE", 230),
    "GBT_AC": ConnectorSpec("GBT_AC", "SOCKET", "AC_3_PHASE", 230),
    "GBT_DC": ConnectorSpec("GBT_DC", "CABLE", "DC", 750),
}


# OCPI 2.2.1 EVSE capabilities a charger (or its template) may declare: what the hardware offers
# on its own. The others promise a module this gateway does not offer (Commands for remote
# start/stop, reservations, unlock; Tokens for RFID whitelists and token groups; SmartCharging
# for charging profiles and preferences), so claiming them would show eMSP apps buttons that
# can never work. Nothing is claimed unless declared.
DECLARABLE_CAPABILITIES = (
    "CHIP_CARD_SUPPORT",
    "CONTACTLESS_CARD_SUPPORT",
    "CREDIT_CARD_PAYABLE",
    "DEBIT_CARD_PAYABLE",
    "PED_TERMINAL",
)


def max_amperage(spec: ConnectorSpec, max_power_kw: float) -> int:
    watts = max_power_kw * 1000
    if spec.power_type == "AC_3_PHASE":  # three phases, each at the line-to-neutral voltage
        return math.ceil(watts / (3 * spec.max_voltage))
    return math.ceil(watts / spec.max_voltage)


class ChargerGroup(BaseModel):
    brand: str
    model: str
    connector_type: str
    ocpp_version: str
    count: int = Field(ge=1)
    max_power_kw: float = Field(gt=0)
    evses: int = Field(default=1, ge=1)
    capabilities: list[str] = Field(default_factory=list)

    @field_validator("capabilities")
    @classmethod
    def _declarable(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(DECLARABLE_CAPABILITIES))
        if unknown:
            raise ValueError(f"not declarable (needs a module this gateway does not offer): {unknown}")
        return value


class LocationTemplate(BaseModel):
    slug: str
    name: str
    site_type: str
    description: str
    charger_groups: list[ChargerGroup]


@lru_cache
def location_templates() -> dict[str, LocationTemplate]:
    raw = json.loads((Path(__file__).with_name("location_templates.json")).read_text())
    templates = [LocationTemplate.model_validate(item) for item in raw]
    return {t.slug: t for t in templates}
