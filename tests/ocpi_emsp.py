"""A small eMSP that knows only OCPI 2.2.1, on a real socket, for the OCPI tests.

As a client it registers with a CPO from `token_a` + `ocpi_peer_url` and pulls every page of
locations following `Link`; as a server it offers versions, credentials (a CPO may register
with it) and a Locations Receiver that stores PUTs, applies PATCHes and records every request.
Every object it receives or pulls is checked with `check_location` (the third-party model from
PyPI plus the spec's field rules).
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ocpi_types import v2_2_1 as third_party

from devstack.procs import free_port

DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z$")  # string(25), UTC
LATITUDE = re.compile(r"^-?[0-9]{1,2}\.[0-9]{5,7}$")
LONGITUDE = re.compile(r"^-?[0-9]{1,3}\.[0-9]{5,7}$")


def _max(obj: dict[str, Any], name: str, length: int) -> None:
    value = obj.get(name)
    assert value is None or (isinstance(value, str) and len(value) <= length), (name, value)


def check_connector(c: dict[str, Any]) -> None:
    third_party.Connector.from_dict(c)
    _max(c, "id", 36)
    assert DATETIME.match(c["last_updated"]), c
    if c["power_type"] == "AC_3_PHASE":  # line to neutral, not between phases
        assert c["max_voltage"] <= 277, c
    assert c["max_voltage"] > 0 and c["max_amperage"] > 0
    if c.get("max_electric_power") is not None:  # the power fits in what voltage and current give
        phases = 3 if c["power_type"] == "AC_3_PHASE" else 1
        assert c["max_electric_power"] <= phases * c["max_voltage"] * c["max_amperage"], c


# Capabilities that promise a module this gateway does not offer (Commands, Tokens, SmartCharging)
UNBACKED = {
    "REMOTE_START_STOP_CAPABLE",
    "RESERVABLE",
    "UNLOCK_CAPABLE",
    "TOKEN_GROUP_CAPABLE",
    "START_SESSION_CONNECTOR_REQUIRED",
    "RFID_READER",
    "CHARGING_PROFILE_CAPABLE",
    "CHARGING_PREFERENCES_CAPABLE",
}


def check_evse(e: dict[str, Any]) -> None:
    third_party.Evse.from_dict(e)
    _max(e, "uid", 36)
    _max(e, "evse_id", 48)
    assert DATETIME.match(e["last_updated"]), e
    assert e["connectors"], "an EVSE has at least one connector"
    assert not set(e.get("capabilities") or []) & UNBACKED, e["capabilities"]
    for c in e["connectors"]:
        check_connector(c)


def check_location(obj: dict[str, Any]) -> None:
    """The third-party OCPI 2.2.1 model (types, enums, required fields) and the spec's rules
    that model does not check (lengths, patterns, DateTime format)."""
    third_party.Location.from_dict(obj)
    for name, length in (
        ("country_code", 2),
        ("party_id", 3),
        ("id", 36),
        ("name", 255),
        ("address", 45),
        ("city", 45),
        ("postal_code", 10),
        ("state", 20),
        ("country", 3),
        ("time_zone", 255),
    ):
        _max(obj, name, length)
    assert re.fullmatch(r"[A-Z]{3}", obj["country"]), obj["country"]
    assert LATITUDE.match(obj["coordinates"]["latitude"]), obj["coordinates"]
    assert LONGITUDE.match(obj["coordinates"]["longitude"]), obj["coordinates"]
    assert obj["time_zone"] and DATETIME.match(obj["last_updated"]), obj
    if obj.get("owner") is not None:
        third_party.BusinessDetails.from_dict(obj["owner"])
        _max(obj["owner"], "name", 100)
    for e in obj.get("evses") or []:
        check_evse(e)
        assert e["last_updated"] <= obj["last_updated"]


def token_header(token: str) -> str:
    return "Token " + base64.b64encode(token.encode()).decode()


def decode_token(header: str | None) -> str | None:
    if not header or not header.startswith("Token "):
        return None
    return base64.b64decode(header[6:]).decode()


@dataclass
class Received:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class FakeEmsp:
    country_code: str
    party_id: str
    base: str = ""
    down: bool = False
    refuse_patches: int = 0  # refuse this many PATCHes (OCPI 2001), as a strict Receiver may
    hang: bool = False  # the Locations Receiver never answers
    attempts: int = 0  # calls that reached the Locations Receiver
    versions_offered: tuple[str, ...] = ("2.2.1",)
    list_endpoints: bool = True
    # tokens: what we gave out (the CPO calls us with it) and what we were given (we call with)
    token_a: str = field(default_factory=lambda: secrets.token_hex(16))
    token_for_cpo: str = field(default_factory=lambda: secrets.token_hex(16))
    token_to_call_cpo: str | None = None
    cpo_versions_url: str | None = None
    locations: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ server side

    def app(self) -> FastAPI:
        app = FastAPI()

        def ok(data: Any, status: int = 200) -> JSONResponse:
            return JSONResponse(
                {
                    "data": data,
                    "status_code": 1000,
                    "status_message": "Success",
                    "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
                status_code=status,
            )

        def fail(http: int, code: int, message: str) -> JSONResponse:
            return JSONResponse(
                {
                    "data": None,
                    "status_code": code,
                    "status_message": message,
                    "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
                status_code=http,
            )

        def allowed(request: Request, *tokens: str | None) -> bool:
            return decode_token(request.headers.get("authorization")) in {t for t in tokens if t}

        @app.get("/ocpi/versions")
        async def versions(request: Request) -> JSONResponse:
            if not allowed(request, self.token_a, self.token_for_cpo):
                return fail(401, 2001, "unknown token")
            return ok([{"version": v, "url": f"{self.base}/ocpi/{v}"} for v in self.versions_offered])

        @app.get("/ocpi/2.2.1")
        async def details(request: Request) -> JSONResponse:
            if not allowed(request, self.token_a, self.token_for_cpo):
                return fail(401, 2001, "unknown token")
            if not self.list_endpoints:
                return ok({"version": "2.2.1", "endpoints": []})
            return ok(
                {
                    "version": "2.2.1",
                    "endpoints": [
                        {
                            "identifier": "credentials",
                            "role": "SENDER",
                            "url": f"{self.base}/ocpi/2.2.1/credentials",
                        },
                        {
                            "identifier": "credentials",
                            "role": "RECEIVER",
                            "url": f"{self.base}/ocpi/2.2.1/credentials",
                        },
                        {
                            "identifier": "locations",
                            "role": "RECEIVER",
                            "url": f"{self.base}/ocpi/emsp/2.2.1/locations",
                        },
                    ],
                }
            )

        @app.post("/ocpi/2.2.1/credentials")
        async def credentials(request: Request) -> JSONResponse:
            """A CPO registers with us: check it by calling its versions back with its token."""
            if not allowed(request, self.token_a):
                return fail(401, 2001, "unknown token")
            body = await request.json()
            third_party.Credentials.from_dict(body)
            async with httpx.AsyncClient() as http:
                got = await http.get(body["url"], headers={"Authorization": token_header(body["token"])})
                assert got.status_code == 200 and got.json()["status_code"] == 1000, got.text
            self.token_to_call_cpo, self.cpo_versions_url = body["token"], body["url"]
            self.received.append(Received("POST", request.url.path, body, dict(request.headers)))
            return ok(self.credentials())

        @app.put("/ocpi/2.2.1/credentials")
        async def rotate(request: Request) -> JSONResponse:
            """The CPO rotates its token with us: we check the new one, and give a new one back."""
            if not allowed(request, self.token_for_cpo):
                return fail(401, 2001, "unknown token")
            body = await request.json()
            async with httpx.AsyncClient() as http:
                got = await http.get(body["url"], headers={"Authorization": token_header(body["token"])})
                assert got.status_code == 200, got.text
            self.received.append(Received("PUT", request.url.path, body, dict(request.headers)))
            self.token_to_call_cpo = body["token"]
            self.token_for_cpo = secrets.token_hex(16)
            return ok(self.credentials())

        @app.delete("/ocpi/2.2.1/credentials")
        async def unregister(request: Request) -> JSONResponse:
            if not allowed(request, self.token_for_cpo):
                return fail(401, 2001, "unknown token")
            self.received.append(Received("DELETE", request.url.path, None, dict(request.headers)))
            return ok(None)

        @app.api_route("/ocpi/emsp/2.2.1/locations/{cc}/{pid}/{location_id}", methods=["PUT", "PATCH"])
        async def receive(cc: str, pid: str, location_id: str, request: Request) -> JSONResponse:
            self.attempts += 1
            if self.hang:
                await asyncio.sleep(3600)
            if self.down:
                return JSONResponse({"error": "maintenance"}, status_code=503)
            if not allowed(request, self.token_for_cpo):
                return fail(401, 2001, "unknown token")
            body = await request.json()
            self.received.append(Received(request.method, request.url.path, body, dict(request.headers)))
            key = (cc, pid, location_id)
            if request.method == "PATCH" and self.refuse_patches > 0:
                self.refuse_patches -= 1
                return fail(200, 2001, "PATCH refused")  # reached the OCPI layer: HTTP 200
            if request.method == "PUT":
                check_location(body)
                assert (body["country_code"], body["party_id"], body["id"]) == key
                self.locations[key] = body
            else:
                if key not in self.locations:
                    return fail(404, 2003, "unknown location")
                assert "last_updated" in body, "a PATCH carries last_updated"
                assert None not in body.values(), "a PATCH never sends null (receivers may ignore it)"
                merged = {**self.locations[key], **body}  # a PATCH replaces the top-level fields sent
                check_location(merged)
                self.locations[key] = merged
            return ok(None)

        return app

    def credentials(self) -> dict[str, Any]:
        return {
            "token": self.token_for_cpo,
            "url": f"{self.base}/ocpi/versions",
            "roles": [
                {
                    "role": "EMSP",
                    "party_id": self.party_id,
                    "country_code": self.country_code,
                    "business_details": {"name": f"eMSP {self.party_id}"},
                }
            ],
        }

    async def start(self) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(500):
            if self.server.started:
                break
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            self.server.force_exit = self.hang  # requests that never end are not waited for
            await self.task

    # ------------------------------------------------------------------ client side

    def headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": token_header(token),
            "X-Request-ID": str(uuid.uuid4()),
            "X-Correlation-ID": str(uuid.uuid4()),
        }

    async def register(self, http: httpx.AsyncClient, token_a: str, peer_url: str) -> dict[str, Any]:
        """The 2.2.1 handshake from token A: versions -> 2.2.1 details -> POST credentials."""
        versions = (await http.get(peer_url, headers=self.headers(token_a))).json()
        assert versions["status_code"] == 1000, versions
        url = next(v["url"] for v in versions["data"] if v["version"] == "2.2.1")
        details = (await http.get(url, headers=self.headers(token_a))).json()
        third_party.VersionDetails.from_dict(details["data"])
        endpoints = {(e["identifier"], e["role"]): e["url"] for e in details["data"]["endpoints"]}
        response = await http.post(
            endpoints[("credentials", "SENDER")], json=self.credentials(), headers=self.headers(token_a)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        third_party.Credentials.from_dict(body["data"])
        self.token_to_call_cpo, self.cpo_versions_url = body["data"]["token"], body["data"]["url"]
        return {"endpoints": endpoints, "credentials": body["data"]}

    async def pull_all(
        self, http: httpx.AsyncClient, url: str
    ) -> tuple[list[dict[str, Any]], list[httpx.Response]]:
        """Every page, following `Link` until there is none; every object checked."""
        assert self.token_to_call_cpo is not None
        found: list[dict[str, Any]] = []
        pages: list[httpx.Response] = []
        next_url: str | None = url
        while next_url:
            response = await http.get(next_url, headers=self.headers(self.token_to_call_cpo))
            assert response.status_code == 200 and response.json()["status_code"] == 1000, response.text
            pages.append(response)
            for obj in response.json()["data"]:
                check_location(obj)
                found.append(obj)
            link = response.headers.get("link")
            next_url = re.match(r'<([^>]+)>; rel="next"', link).group(1) if link else None  # type: ignore[union-attr]
        return found, pages
