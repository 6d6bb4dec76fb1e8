"""What crosses Temporal for the OCPI pushes: the changes, the push workflow's input and result,
and the OCPI activities' typed interface (implemented in `activities/ocpi_push.py`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from temporalio import activity

WORKFLOW_OCPI_PUSH = "OcpiLocationPush"
REJECTED = "OCPI_PUSH_REJECTED"  # the eMSP refused the object itself: retrying will not help


@dataclass
class LocationChange:
    """A change of one location. `columns`: what a PATCH changed (empty: send the whole object).
    `version`: the location's full-precision last_updated, set by the notify activity."""

    cpo_id: int
    location_id: str
    columns: list[str] = field(default_factory=list)
    version: str = ""


@dataclass
class PushTarget:
    partner_id: int
    cpo_id: int
    location_id: str
    max_interval_seconds: float = 300.0
    idle_seconds: float = 3600.0
    # carried across continue-as-new
    pending: list[LocationChange] = field(default_factory=list)
    delivered: str = ""


@dataclass
class PushInput:
    partner_id: int
    location_id: str
    columns: list[str]
    delivered: str


@dataclass
class PushResult:
    """`outcome`: DELIVERED, SUPERSEDED (nothing newer than what the eMSP has), GONE (the eMSP
    unregistered or the location no longer exists)."""

    outcome: str
    method: str | None = None
    version: str = ""


@dataclass
class PushSummary:
    delivered: str
    pushes: int
    rejected: int


class OcpiActivities(ABC):
    """Interface of the OCPI activities; `activities.ocpi_push.OcpiPushActivities` implements it."""

    @activity.defn(name="ocpi_retire_location")
    @abstractmethod
    async def retire_location(self, location_id: str) -> bool:
        """Location and EVSEs REMOVED, OCPP side deleted; False if there was nothing to retire."""

    @activity.defn(name="ocpi_notify_partners")
    @abstractmethod
    async def notify_partners(self, change: LocationChange) -> int:
        """Signal-with-start one push per registered eMSP of the CPO; how many."""

    @activity.defn(name="ocpi_push_location")
    @abstractmethod
    async def push_location(self, inp: PushInput) -> PushResult:
        """PUT (or PATCH) the location on one eMSP's Locations Receiver."""
