"""FastAPI dependencies: settings, database session, Temporal client, and the caller's identity."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from temporalio.client import Client

from api.problems import TEMPORAL_DOWN, ApiError
from api.read_cache import KnownToken, ReadCaches
from api.state import services
from contracts.ids import sha256_hex
from contracts.temporal import connect
from db.models import ApiToken, PartnerOperation, utcnow
from observability.tracing import temporal_plugins
from settings import Settings

log = logging.getLogger("api")
bearer = HTTPBearer(auto_error=False, description="admin token, or the CPO's own token")


async def get_settings(request: Request) -> Settings:
    # async: a plain `def` dependency is run on a thread pool, a thread hop on every request
    settings: Settings = services(request).settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with services(request).sessions() as session:
        yield session


class TemporalConnector:
    """Connects lazily, so the API starts (and answers 503) while Temporal is down. A route asks
    for the client only when it needs Temporal, so reads never wait on it."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self.settings = settings
        self._client = client  # given: an already connected client (the tests' test server)
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    try:
                        self._client = await asyncio.wait_for(
                            connect(self.settings, plugins=temporal_plugins()), timeout=5
                        )
                    except Exception as err:
                        log.warning(
                            "Temporal cannot be reached at %s: %r", self.settings.temporal_address, err
                        )
                        raise ApiError(
                            503, "TEMPORAL_UNAVAILABLE", TEMPORAL_DOWN, headers={"Retry-After": "5"}
                        ) from err
        return self._client


async def get_temporal(request: Request) -> TemporalConnector:
    connector: TemporalConnector = services(request).temporal
    return connector


@dataclass(frozen=True)
class Principal:
    is_admin: bool
    cpo_id: int | None = None


UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


async def authenticate(
    scheme: str | None,
    token: str | None,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    cache: ReadCaches,
) -> Principal:
    """Who the bearer token is, or 401. Used by the routes and, before a body is read, by
    `api.body_guard` (which hands its answer on in `request.state.principal`). A known CPO token
    is remembered for `auth_cache_seconds` (api/read_cache.py): a poll then needs no query."""
    if not scheme or scheme.lower() != "bearer" or not token:
        raise ApiError(401, "UNAUTHORIZED", "a bearer token is required", headers=UNAUTHORIZED)
    if any(hmac.compare_digest(token.encode(), admin.encode()) for admin in settings.admin_tokens()):
        return Principal(is_admin=True)
    token_hash = sha256_hex(token)

    async def lookup() -> KnownToken | None:
        now = utcnow()
        async with sessions() as session:  # its own session: a background refresh outlives the request
            row = (
                await session.execute(
                    select(col(ApiToken.cpo_id), col(ApiToken.expires_at)).where(
                        col(ApiToken.token_hash) == token_hash,
                        col(ApiToken.revoked_at).is_(None),
                        or_(col(ApiToken.expires_at).is_(None), col(ApiToken.expires_at) > now),
                    )
                )
            ).first()
        return None if row is None else KnownToken(cpo_id=int(row[0]), expires_at=row[1])

    known = await cache.tokens.get(token_hash, lookup)
    if known is None or not known.valid():
        raise ApiError(401, "UNAUTHORIZED", "unknown, revoked or expired token", headers=UNAUTHORIZED)
    return Principal(is_admin=False, cpo_id=known.cpo_id)


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> Principal:
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    if credentials is None:
        raise ApiError(401, "UNAUTHORIZED", "a bearer token is required", headers=UNAUTHORIZED)
    return await authenticate(
        credentials.scheme,
        credentials.credentials,
        settings,
        services(request).sessions,
        services(request).read_cache,
    )


async def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "FORBIDDEN", "this route needs the admin token")
    return principal


CpoIdPath = Annotated[
    str,
    Path(
        pattern=r"^[0-9]+$",
        max_length=18,
        description="the CPO id returned by POST /ocpi/cpos",
        examples=["42"],
    ),
]


@dataclass(frozen=True)
class Cpo:
    """The CPO of the path, as routes need it: plain values (an ORM row would expire on a
    rollback, and its id would be Optional)."""

    id: int
    name: str
    country_code: str
    party_id: str


async def get_cpo(
    request: Request,
    cpo_id: CpoIdPath,
    principal: Annotated[Principal, Depends(get_principal)],
) -> Cpo:
    """The CPO of the path. A CPO token on another CPO gets 403 (whether or not it exists, so
    that ids do not leak); the admin gets 404 for an unknown CPO."""
    cpo_number = int(cpo_id)
    if not principal.is_admin and principal.cpo_id != cpo_number:
        raise ApiError(403, "FORBIDDEN", "this token may only act on its own CPO")
    cache: ReadCaches = services(request).read_cache
    sessions: async_sessionmaker[AsyncSession] = services(request).sessions

    async def lookup() -> Cpo | None:
        async with sessions() as own:
            row = await own.get(PartnerOperation, cpo_number)
        if row is None:
            return None
        return Cpo(id=cpo_number, name=row.name, country_code=row.country_code, party_id=row.party_id)

    cpo = await cache.cpos.get(cpo_number, lookup)
    if cpo is None:
        raise ApiError(404, "CPO_NOT_FOUND", f"no CPO {cpo_id}")
    return cpo


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TemporalDep = Annotated[TemporalConnector, Depends(get_temporal)]
CpoDep = Annotated[Cpo, Depends(get_cpo)]


async def get_read_cache(request: Request) -> ReadCaches:
    cache: ReadCaches = services(request).read_cache
    return cache


ReadCacheDep = Annotated[ReadCaches, Depends(get_read_cache)]


async def limit_inflight(cpo: Annotated[Cpo, Depends(get_cpo)], request: Request) -> AsyncIterator[None]:
    """429 when one CPO already has `max_inflight_requests_per_cpo` requests being served by this
    API process (PATCH, DELETE and cancel may wait on Temporal: one CPO must not hold them all)."""
    counts: dict[int, int] = services(request).inflight
    settings: Settings = services(request).settings
    if counts.get(cpo.id, 0) >= settings.max_inflight_requests_per_cpo:
        raise ApiError(
            429,
            "TOO_MANY_REQUESTS",
            f"this CPO has {settings.max_inflight_requests_per_cpo} requests in flight; retry "
            "when one has been answered",
            headers={"Retry-After": "1"},
        )
    counts[cpo.id] = counts.get(cpo.id, 0) + 1
    try:
        yield
    finally:
        counts[cpo.id] -= 1
