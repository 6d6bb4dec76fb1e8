"""Charger secrets: derived, never stored in clear (their SHA-256 is), never put in a RunTask
request (the task gets the ARN of its Secrets Manager secret, see activities/ecs_tasks.py)."""

from __future__ import annotations

import hashlib
import hmac

from settings import Settings


def charger_secret(key: str, deployment_id: str) -> str:
    """32 bytes derived from the deployment, so that every retry hands the charger the same one."""
    return hmac.new(key.encode(), deployment_id.encode(), hashlib.sha256).hexdigest()


def charger_secret_name(settings: Settings, deployment_id: str) -> str:
    """The charger's Secrets Manager secret: one per deployment, found again by its name."""
    return f"{settings.charger_secret_prefix}{deployment_id}"
