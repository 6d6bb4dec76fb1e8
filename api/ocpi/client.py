"""Calls to an eMSP during the credentials handshake: its versions, its 2.2.1 endpoints, and our
credentials (POST when we register with it, PUT when we rotate, DELETE when we leave).

Every call goes through the egress policy (contracts/egress.py): the eMSP chose these URLs. A
failure is always the same OCPI 3001 text, whatever happened (refused, closed, slow, too big,
not OCPI): the peer's answer is never echoed and a port scan learns nothing. The endpoints it
lists are checked against the policy before they are kept, and a Locations Receiver we may not
call fails the handshake (we would push to it later)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from api.ocpi.transport import (
    NO_MATCHING_ENDPOINTS,
    UNABLE_TO_USE_CLIENT_API,
    UNSUPPORTED_VERSION,
    OcpiError,
)
from contracts.egress import EgressPolicy, PeerUnusable, check_url, peer_request
from contracts.ocpi import endpoint_url
from db.ocpi_wire import token_header

VERSION = "2.2.1"
MAX_ENDPOINTS = 40  # 2.2.1 defines ~13 modules x 2 roles
UNUSABLE = "the eMSP's OCPI interface could not be used"
log = logging.getLogger("api.ocpi")


def unusable() -> OcpiError:
    return OcpiError(200, UNABLE_TO_USE_CLIENT_API, UNUSABLE)


@dataclass
class PeerVersion:
    versions_url: str
    endpoints: list[dict[str, Any]]

    def url_of(self, identifier: str, role: str) -> str | None:
        return endpoint_url(self.endpoints, identifier, role)

    def credentials_url(self) -> str | None:
        return self.url_of("credentials", "RECEIVER") or self.url_of("credentials", "SENDER")


def request_headers(token: str) -> dict[str, str]:
    return {
        "Authorization": token_header(token),
        "X-Request-ID": str(uuid.uuid4()),
        "X-Correlation-ID": str(uuid.uuid4()),
    }


async def call(policy: EgressPolicy, method: str, url: str, token: str, body: Any = None) -> Any:
    """One OCPI call: the `data` of a 200 + 1000 answer, or 3001 (nothing of the answer told)."""
    try:
        response = await peer_request(method, url, policy=policy, headers=request_headers(token), json=body)
        answer = response.json()
    except PeerUnusable as err:
        raise unusable() from err
    if response.status != 200 or not isinstance(answer, dict) or answer.get("status_code") != 1000:
        log.debug("eMSP %s %.120s answered HTTP %s", method, url, response.status)
        raise unusable()
    return answer.get("data")


async def fetch_peer(policy: EgressPolicy, versions_url: str, token: str) -> PeerVersion:
    """The peer's 2.2.1 endpoints, each allowed by the policy: 3002 if it has no 2.2.1, 3003 if
    it lists no endpoint; 3001 if an endpoint it lists may not be called."""
    versions = await call(policy, "GET", versions_url, token)
    if not isinstance(versions, list):
        raise unusable()
    url = next((v.get("url") for v in versions if isinstance(v, dict) and v.get("version") == VERSION), None)
    if url is None:
        raise OcpiError(200, UNSUPPORTED_VERSION, f"the peer offers no OCPI {VERSION}")
    if not isinstance(url, str):
        raise unusable()
    details = await call(policy, "GET", url, token)
    endpoints = details.get("endpoints") if isinstance(details, dict) else None
    if not isinstance(endpoints, list) or not endpoints:
        raise OcpiError(200, NO_MATCHING_ENDPOINTS, f"the peer's {VERSION} details list no endpoint")
    clean = [
        {"identifier": str(e.get("identifier"))[:40], "role": str(e.get("role"))[:16], "url": e.get("url")}
        for e in endpoints[:MAX_ENDPOINTS]
        if isinstance(e, dict) and e.get("url")
    ]
    if any(not isinstance(e["url"], str) or len(e["url"]) > 255 for e in clean):
        raise unusable()
    try:  # every URL we may call later, checked now (each call checks again when it connects)
        await asyncio.gather(*(check_url(u, policy) for u in {str(e["url"]) for e in clean}))
    except PeerUnusable as err:
        raise unusable() from err
    return PeerVersion(versions_url, clean)


async def send_credentials(
    policy: EgressPolicy, method: str, url: str, token: str, ours: dict[str, Any]
) -> dict[str, Any]:
    """POST (register) or PUT (rotate) our credentials with `token`; the eMSP's credentials."""
    data = await call(policy, method, url, token, ours)
    if not isinstance(data, dict):
        raise unusable()
    return data


class HandshakeSlots:
    """How many handshakes run at once in this API process, per CPO and in all: each one holds
    a request open for up to three calls out. Beyond either bound a new one is refused at once."""

    def __init__(self, per_cpo: int, per_process: int) -> None:
        self.per_cpo = per_cpo
        self.per_process = per_process
        self.running: Counter[int] = Counter()
        self.total = 0

    @asynccontextmanager
    async def take(self, cpo_id: int) -> AsyncIterator[bool]:
        """Yields False (and takes nothing) when over a bound."""
        if self.total >= self.per_process or self.running[cpo_id] >= self.per_cpo:
            yield False
            return
        self.total += 1
        self.running[cpo_id] += 1
        try:
            yield True
        finally:
            self.total -= 1
            self.running[cpo_id] -= 1
            if self.running[cpo_id] <= 0:
                del self.running[cpo_id]
