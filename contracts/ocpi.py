"""What crosses Temporal for the OCPI pushes: the changes, the push workflow's input and result,
and the OCPI activities' typed interface (implemented in `activities/ocpi_push.py`); and how a
peer's endpoint is found in its version details (the API's handshake and the pushes alike)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity

WORKFLOW_OCPI_PUSH = "OcpiLocationPush"
REJECTED = "OCPI_PUSH_REJECTED"  # the eMSP refused the object itself: retrying will not help
PATCH_REJECTED = "OCPI_PATCH_REJECTED"  # the eMSP refused a PATCH: 2.2.1 says send the whole object


def endpoint_url(endpoints: list[dict[str, Any]] | None, identifier: str, role: str) -> str | None:
    """The URL of a peer's module endpoint (OCPI 2.2.1 version details), as the peer gave it."""
    for endpoint in endpoints or []:
        if endpoint.get("identifier") == identifier and endpoint.get("role") == role:
            return str(endpoint.get("url"))
    return None


@dataclass
class LocationChange:
    """A change of one location: a nudge to its push workflows, which push whatever the Sender
    serves by then. `columns` and `version` are what older pushes carried; nothing reads them."""

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
    delivered: str = ""  # unused: what older pushes carried
    # the pushes' own task queue and attempt timeout (empty: the workflow's queue, 60 s)
    task_queue: str = ""
    attempt_timeout_seconds: float = 60.0


@dataclass
class PushInput:
    """`force_put`: send the whole object even where a PATCH could say the difference (after
    the eMSP refused a PATCH)."""

    partner_id: int
    location_id: str
    force_put: bool = False


@dataclass
class PushResult:
    """`outcome`: DELIVERED; UP_TO_DATE (this eMSP was sent the location's current version
    already); NOT_VISIBLE (not served yet: still provisioning); GONE (the eMSP is no longer
    registered, or the location no longer exists). `version`: the location version the eMSP has."""

    outcome: str
    method: str | None = None
    version: int = 0


@dataclass
class PushSummary:
    delivered: int
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
        """Bring one eMSP's copy of the location to what the Sender serves: a PATCH of the
        difference from what it was last sent, or a PUT of the whole object."""
