"""Charger secrets: derived, never stored in clear (their SHA-256 is)."""

from __future__ import annotations

import hashlib
import hmac


def charger_secret(key: str, deployment_id: str) -> str:
    """32 bytes derived from the deployment, so that every retry hands the charger the same one."""
    return hmac.new(key.encode(), deployment_id.encode(), hashlib.sha256).hexdigest()
