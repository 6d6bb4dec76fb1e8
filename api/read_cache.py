"""What every poll asks again, remembered briefly by each API process.

With 20 clients polling one job, each GET used to be four round trips to PostgreSQL (the token,
the CPO, the job row, its counts by state) and ~6 ms of CPU in the API; the answers change far
more slowly than they are asked for. A poll now costs no database work while its answers are
fresh:

- a CPO token's owner for `auth_cache_seconds` (never past the token's expiry; a revoke in this
  process forgets at once, the other processes within that time; unknown tokens are not kept, so
  a caller spraying tokens cannot fill the cache);
- the CPO of a path for the same time (its name and party never change after creation);
- a job's status page: fresh for `status_cache_seconds`; older (up to `STALE_FACTOR` times
  that), it is still answered at once while one background read refreshes it, so the pollers of
  a job never queue on PostgreSQL (they did at each expiry, and that was the p99 of a poll under
  load); older still, the poll reads it itself. Cancelling through this process forgets it.

Keys always carry the CPO, so one tenant never reads another's entry. Bounded (LRU) so memory
stays flat whatever the callers send.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from cachetools import LRUCache, TTLCache

from db.models import utcnow

if TYPE_CHECKING:
    from api.deps import Cpo
    from api.schemas import JobStatusOut

K = TypeVar("K")
V = TypeVar("V")

MAX_ENTRIES = 10_000
STALE_FACTOR = 4  # a status page up to 4 x status_cache_seconds old is answered while it refreshes
log = logging.getLogger(__name__)


class Recent(Generic[K, V]):
    """A bounded TTL map; a TTL of 0 keeps nothing."""

    def __init__(self, seconds: float) -> None:
        self._entries: TTLCache[K, V] | None = TTLCache(MAX_ENTRIES, seconds) if seconds > 0 else None

    def get(self, key: K) -> V | None:
        return None if self._entries is None else self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        if self._entries is not None:
            self._entries[key] = value

    def clear(self) -> None:
        if self._entries is not None:
            self._entries.clear()


@dataclass(frozen=True)
class KnownToken:
    cpo_id: int
    expires_at: datetime | None

    def valid(self) -> bool:
        return self.expires_at is None or self.expires_at > utcnow()


class Refreshed(Generic[K, V]):
    """Values served from memory and refreshed in the background once older than `seconds` (one
    refresh a key at a time); a value older than `STALE_FACTOR * seconds` is read again in the
    request. A TTL of 0 keeps nothing."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: LRUCache[K, tuple[float, V]] = LRUCache(MAX_ENTRIES)
        self._refreshing: dict[K, asyncio.Task[None]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        if self.seconds <= 0:
            return await load()
        entry = self._entries.get(key)
        age = time.monotonic() - entry[0] if entry is not None else None
        if entry is None or age is None or age > STALE_FACTOR * self.seconds:
            return await self._load(key, load)
        if age > self.seconds and key not in self._refreshing:
            self._refreshing[key] = asyncio.create_task(self._refresh(key, load))
        return entry[1]

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        started = time.monotonic()
        value = await load()
        self._entries[key] = (started, value)  # as old as the moment the read began
        return value

    async def _refresh(self, key: K, load: Callable[[], Awaitable[V]]) -> None:
        try:
            await self._load(key, load)
        except Exception:  # the next request past the stale bound reads it itself, and says why
            log.warning("background refresh of %s failed", key, exc_info=True)
        finally:
            self._refreshing.pop(key, None)

    def forget(self, match: object) -> None:
        """Drop every entry whose key is `match` or a tuple that contains it."""
        for key in [k for k in self._entries if k == match or (isinstance(k, tuple) and match in k)]:
            self._entries.pop(key, None)


class ReadCaches:
    """The API process's caches (`app.state.read_cache`)."""

    def __init__(self, auth_seconds: float, status_seconds: float) -> None:
        self.tokens: Recent[str, KnownToken] = Recent(auth_seconds)  # SHA-256 of the token
        self.cpos: Recent[int, Cpo] = Recent(auth_seconds)
        # (CPO id, job id, page, limit) -> the status body
        self.statuses: Refreshed[tuple[int, str, int, int], JobStatusOut] = Refreshed(status_seconds)
