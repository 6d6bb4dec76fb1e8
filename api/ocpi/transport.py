"""OCPI 2.2.1 transport: the response envelope, status codes, `Token` auth and request ids.

Every OCPI route answers `{data, status_code, status_message, timestamp}`, errors included, and
echoes `X-Request-ID` / `X-Correlation-ID` (made up when the caller sent none).
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.problems import DATABASE_DOWN, is_db_down
from api.state import services
from contracts.ids import sha256_hex
from db.models import OcpiPartner, OcpiTokenA, utcnow
from db.ocpi_wire import ocpi_datetime
from settings import Settings

log = logging.getLogger("api.ocpi")

# OCPI status codes (status_codes.asciidoc)
SUCCESS = 1000
CLIENT_ERROR = 2000
INVALID_PARAMETERS = 2001
UNKNOWN_LOCATION = 2003
SERVER_ERROR = 3000
UNABLE_TO_USE_CLIENT_API = 3001
UNSUPPORTED_VERSION = 3002
NO_MATCHING_ENDPOINTS = 3003


class OcpiError(Exception):
    def __init__(
        self, http_status: int, status_code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status_code = status_code
        self.message = message
        self.headers = headers


def envelope(data: Any = None, status_code: int = SUCCESS, message: str = "Success") -> dict[str, Any]:
    return {
        "data": data,
        "status_code": status_code,
        "status_message": message,
        "timestamp": ocpi_datetime(datetime.now(UTC)),
    }


def ocpi_json(
    data: Any = None,
    status_code: int = SUCCESS,
    message: str = "Success",
    http_status: int = 200,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(envelope(data, status_code, message), status_code=http_status, headers=headers)


def _candidates(credential: str) -> list[str]:
    """2.2.1 sends the token base64-encoded; 2.1.1-era clients send it as is. Try both."""
    found = [credential]
    try:
        decoded = base64.b64decode(credential, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return found
    if decoded and decoded.isprintable():
        found.insert(0, decoded)
    return found


@dataclass(frozen=True)
class Caller:
    """Who called: an eMSP of the CPO of the path (its row's id and status), or the holder of a
    token A. Plain values: no database session stays open for them."""

    cpo_id: int
    token: str
    partner_id: int | None = None
    partner_status: str | None = None
    token_a_id: int | None = None


def unauthorized(message: str) -> OcpiError:
    return OcpiError(401, INVALID_PARAMETERS, message, headers={"WWW-Authenticate": "Token"})


def plain_id(value: str, longest: int = 18) -> int | None:
    """An id of the path as an int, if it is plain ASCII digits ("²".isdigit() is True too)."""
    if not value or len(value) > longest or not value.isascii() or not value.isdigit():
        return None
    return int(value)


async def identify(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    cpo_id: str,
    authorization: str | None,
) -> Caller:
    """401 unless the token is a live token A or an eMSP's token, of this CPO. Its own short
    session: nothing is held once the caller is known (a handshake then calls out for seconds)."""
    number = plain_id(cpo_id)
    if not authorization or number is None:
        raise unauthorized("Authorization: Token <base64 token> is required")
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "token" or not credential or len(credential) > 1024:
        raise unauthorized("Authorization: Token <base64 token> is required")
    now = utcnow()
    # a REGISTERING row (we are registering with that eMSP) authenticates only while its
    # handshake can still run: a crashed handshake leaves nothing that opens a door for long
    registering_since = now - timedelta(seconds=handshake_window(settings))
    async with sessions() as session:
        for token in _candidates(credential):
            digest = sha256_hex(token)
            partner = (
                await session.execute(
                    select(col(OcpiPartner.id), col(OcpiPartner.status), col(OcpiPartner.updated_at)).where(
                        or_(
                            col(OcpiPartner.token_hash) == digest,
                            col(OcpiPartner.pending_token_hash) == digest,
                        ),
                        col(OcpiPartner.cpo_id) == number,
                        col(OcpiPartner.status).in_(["REGISTERED", "REGISTERING", "SUSPENDED"]),
                    )
                )
            ).first()
            if partner is not None:
                if partner.status == "SUSPENDED":
                    raise unauthorized("this eMSP is suspended by the CPO")
                if partner.status == "REGISTERING" and partner.updated_at < registering_since:
                    raise unauthorized("unknown token")
                return Caller(number, token, partner_id=int(partner.id), partner_status=str(partner.status))
            token_a = (
                await session.execute(
                    select(OcpiTokenA).where(
                        col(OcpiTokenA.token_hash) == digest, col(OcpiTokenA.cpo_id) == number
                    )
                )
            ).scalar_one_or_none()
            if token_a is not None:
                if token_a.used_at is not None:
                    raise unauthorized("this token A was already used to register; it is void")
                if token_a.revoked_at is not None or (
                    token_a.expires_at is not None and token_a.expires_at <= now
                ):
                    raise unauthorized("this token A was revoked or has expired")
                return Caller(number, token, token_a_id=token_a.id)
    raise unauthorized("unknown token")


def handshake_window(settings: Settings) -> float:
    """How long one handshake can run: three calls out, each under the total deadline."""
    return 3 * settings.ocpi_http_timeout_seconds + 30


async def get_caller(
    request: Request,
    cpo_id: str,
    authorization: Annotated[str | None, Header()] = None,
) -> Caller:
    """The caller, as `api.body_guard` found it before reading a body, or looked up now."""
    known: Caller | None = getattr(request.state, "ocpi_caller", None)
    if known is not None:
        return known
    return await identify(services(request).sessions, services(request).settings, cpo_id, authorization)


async def registered(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """Modules other than versions and credentials: a token A gets 401 (transport_and_format)."""
    if caller.partner_id is None or caller.partner_status != "REGISTERED":
        raise unauthorized("register through the credentials module first")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
RegisteredDep = Annotated[Caller, Depends(registered)]


async def _ocpi_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OcpiError)
    return ocpi_json(None, exc.status_code, exc.message, exc.http_status, exc.headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg', 'invalid')}"
        for e in list(exc.errors())[:10]
    )
    # A body that is not JSON never reached the OCPI layer: HTTP 400. Anything else did, and
    # status_codes.asciidoc answers it with HTTP 200 and 2001 in the envelope.
    unreadable = any(e.get("type") == "json_invalid" for e in exc.errors())
    return ocpi_json(
        None, INVALID_PARAMETERS, f"invalid or missing parameters: {problems}", 400 if unreadable else 200
    )


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = UNKNOWN_LOCATION if exc.status_code == 404 and "/locations" in request.url.path else CLIENT_ERROR
    return ocpi_json(None, code, str(exc.detail), exc.status_code, dict(exc.headers) if exc.headers else None)


async def _database(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unreachable: %s", exc)
    return ocpi_json(None, SERVER_ERROR, DATABASE_DOWN, 503, {"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, IntegrityError):  # a uniqueness conflict is the caller's, not an outage
        log.info("conflict on %s %s: %s", request.method, request.url.path, exc.orig)
        return ocpi_json(None, INVALID_PARAMETERS, "conflicts with an existing registration", 409)
    if is_db_down(exc):
        return await _database(request, exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return ocpi_json(None, SERVER_ERROR, "an unexpected error occurred", 500)


def install(app: FastAPI) -> None:
    """The OCPI sub-application's error handlers and its request-id echo."""
    app.add_exception_handler(OcpiError, _ocpi_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)

    @app.middleware("http")
    async def request_ids(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        correlation_id = request.headers.get("x-correlation-id") or str(uuid.uuid4())
        try:
            response = await call_next(request)
        except Exception as err:  # the catch-all handler runs outside this middleware
            response = await _unexpected(request, err)
        response.headers["X-Request-ID"] = request_id[:255]
        response.headers["X-Correlation-ID"] = correlation_id[:255]
        return response
