"""What the API's lifespan builds, typed: routes and dependencies reach it through
`services(request)`, never through untyped `app.state` attributes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from api.deps import TemporalConnector
    from api.job_starts import JobStarts
    from api.metrics import ApiMetrics
    from api.ocpi.client import HandshakeSlots
    from api.read_cache import ReadCaches
    from settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    temporal: TemporalConnector
    read_cache: ReadCaches
    handshakes: HandshakeSlots
    metrics: ApiMetrics
    job_starts: JobStarts
    inflight: dict[int, int] = field(default_factory=dict)  # CPO id -> requests being served


def services(connection: HTTPConnection) -> Services:
    """The app's services (set by its lifespan, shared with the OCPI sub-application)."""
    return cast(Services, connection.app.state.services)
