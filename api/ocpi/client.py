"""Calls to an eMSP during the credentials handshake: its versions, its 2.2.1 endpoints, and our
POST of credentials when we are the one registering."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from api.ocpi.transport import (
    NO_MATCHING_ENDPOINTS,
    UNABLE_TO_USE_CLIENT_API,
    UNSUPPORTED_VERSION,
    OcpiError,
)
from db.ocpi_wire import token_header

VERSION = "2.2.1"


@dataclass
class PeerVersion:
    versions_url: str
    endpoints: list[dict[str, Any]]

    def url_of(self, identifier: str, role: str) -> str | None:
        for e in self.endpoints:
            if e.get("identifier") == identifier and e.get("role") == role:
                return str(e.get("url"))
        return None


def request_headers(token: str) -> dict[str, str]:
    return {"Authorization": token_header(token), "X-Request-ID": str(uuid.uuid4()),
            "X-Correlation-ID": str(uuid.uuid4())}


async def _get_data(client: httpx.AsyncClient, url: str, token: str) -> Any:
    try:
        response = await client.get(url, headers=request_headers(token))
        body = response.json()
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as err:
        raise OcpiError(200, UNABLE_TO_USE_CLIENT_API, f"GET {url} failed: {err}") from err
    if response.status_code != 200 or not isinstance(body, dict) or body.get("status_code") != 1000:
        raise OcpiError(200, UNABLE_TO_USE_CLIENT_API,
                        f"GET {url} answered HTTP {response.status_code}: {str(body)[:200]}")
    return body.get("data")


async def fetch_peer(client: httpx.AsyncClient, versions_url: str, token: str) -> PeerVersion:
    """The peer's 2.2.1 endpoints: 3002 if it has no 2.2.1, 3003 if it lists no endpoint."""
    versions = await _get_data(client, versions_url, token)
    if not isinstance(versions, list):
        raise OcpiError(200, UNABLE_TO_USE_CLIENT_API, "the versions endpoint did not answer a list")
    url = next((str(v.get("url")) for v in versions if isinstance(v, dict) and v.get("version") == VERSION),
               None)
    if url is None:
        raise OcpiError(200, UNSUPPORTED_VERSION, f"the peer offers no OCPI {VERSION}")
    details = await _get_data(client, url, token)
    endpoints = details.get("endpoints") if isinstance(details, dict) else None
    if not isinstance(endpoints, list) or not endpoints:
        raise OcpiError(200, NO_MATCHING_ENDPOINTS, f"the peer's {VERSION} details list no endpoint")
    clean = [{"identifier": str(e.get("identifier")), "role": str(e.get("role")), "url": str(e.get("url"))}
             for e in endpoints if isinstance(e, dict) and e.get("url")]
    return PeerVersion(versions_url, clean)


async def post_credentials(
    client: httpx.AsyncClient, url: str, token_a: str, ours: dict[str, Any]
) -> dict[str, Any]:
    """POST our credentials to the eMSP with its token A; its credentials (token to call it)."""
    try:
        response = await client.post(url, json=ours, headers=request_headers(token_a))
        body = response.json()
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as err:
        raise OcpiError(200, UNABLE_TO_USE_CLIENT_API, f"POST {url} failed: {err}") from err
    data = body.get("data") if isinstance(body, dict) else None
    if response.status_code != 200 or body.get("status_code") != 1000 or not isinstance(data, dict):
        raise OcpiError(200, UNABLE_TO_USE_CLIENT_API,
                        f"POST {url} answered HTTP {response.status_code}: {str(body)[:200]}")
    return data
