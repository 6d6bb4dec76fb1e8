"""Deterministic identifiers: an activity that runs twice derives the same keys and upserts.

`loc-`/`dep-` + 32 hex characters = 36, which fits OCPI's CiString(36). Also the one digest
under which random secrets are stored. (A job's own id is random: the API draws it.)
"""

from __future__ import annotations

import hashlib
import uuid

_NAMESPACE = uuid.UUID("6f0c7a52-2f4e-4c55-9d1e-0c2b5a7e31d4")


def _hex(*parts: object) -> str:
    return uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)).hex


def location_id(job_id: str, index: int) -> str:
    return f"loc-{_hex(job_id, index)}"


def ocpp_location_id(job_id: str, index: int) -> str:
    return f"ocl-{_hex(job_id, index, 'ocpp')}"


def charge_point_id(job_id: str, index: int, charger: int) -> str:
    return f"cp-{_hex(job_id, index, charger)}"


def deployment_id(job_id: str, index: int, charger: int) -> str:
    return f"dep-{_hex(job_id, index, charger, 'deployment')}"


def evse_uid(job_id: str, index: int, charger: int, evse: int) -> str:
    return f"evs-{_hex(job_id, index, charger, evse)}"


def topology_id(job_id: str, index: int, charger: int, evse: int) -> str:
    return f"top-{_hex(job_id, index, charger, evse, 'topology')}"


def provision_workflow_id(job_id: str, index: int) -> str:
    return f"{job_id}/location-{index}"


def callback_event_id(job_id: str) -> str:
    """The id of a job's completion event: the same on every redelivery, so a receiver dedupes."""
    return f"evt-{_hex(job_id, 'job.completed')}"


def callback_workflow_id(job_id: str) -> str:
    return f"{job_id}/callback"


def sha256_hex(value: str) -> str:
    """How random secrets (API tokens, charger secrets) are stored: they need no slow hash."""
    return hashlib.sha256(value.encode()).hexdigest()
