"""What every poll asks again, remembered briefly by each API process.

With 20 clients polling one job, each GET used to be four round trips to PostgreSQL (the token,
the CPO, the job row, its counts by state) and ~6 ms of CPU in the API; the answers change far
more slowly than they are asked for. A poll now costs no database work:

- a CPO token's owner: at most `auth_cache_seconds` old (never past the token's expiry; a revoke
  in this process forgets at once, the other processes within that time; unknown tokens are not
  kept, so a caller spraying tokens cannot fill the cache);
- the CPO of a path, for the same time (its name and party never change after creation);
- a job's status page: fresh for `status_cache_seconds`, answered up to `STALE_FACTOR` times
  that old.

Each answer is read again in the background once its fresh time has passed (a token and a CPO
at 4/5 of their bound), one read a key at a time, so a key in steady use never expires inside a
request. Before this, all the pollers missed together at each expiry and queued on PostgreSQL,
and that queue was the p99 of a poll under load. A key unused for longer than its bound is read
within the request, once for all the requests that want it meanwhile.

Keys always carry the CPO, so one tenant never reads another's entry. Bounded (LRU) so memory
stays flat whatever the callers send: tokens and CPOs by entries, status pages by bytes
(`status_cache_max_bytes`, the length of each page's JSON: a 1,000-result page is ~1.4 MB).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cachetools import LRUCache
from pydantic import BaseModel

from db.models import utcnow

if TYPE_CHECKING:
    from api.deps import Cpo
    from api.schemas import JobStatusOut

K = TypeVar("K")
V = TypeVar("V")

MAX_ENTRIES = 10_000
STALE_FACTOR = 4  # a status page up to 4 x status_cache_seconds old is answered while it refreshes
AUTH_REFRESH_AT = 0.8  # a token or a CPO is read again once 4/5 of auth_cache_seconds old
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownToken:
    cpo_id: int
    expires_at: datetime | None

    def valid(self) -> bool:
        return self.expires_at is None or self.expires_at > utcnow()


class Refreshed(Generic[K, V]):
    """Values at most `max_age` seconds old, read again in the background once older than `fresh`
    (one read a key at a time, shared by the requests that wait for it). A load that returns
    None (an unknown token) stores nothing. `fresh` 0 keeps nothing."""

    def __init__(self, fresh: float, max_age: float, max_bytes: int | None = None) -> None:
        self.fresh = fresh
        self.max_age = max(max_age, fresh)
        # by entries, or (status pages, whose size varies from bytes to megabytes) by bytes
        self._entries: LRUCache[K, tuple[float, V]] = (
            LRUCache(MAX_ENTRIES) if max_bytes is None else LRUCache(max_bytes, getsizeof=_json_size)
        )
        self._loading: dict[K, asyncio.Task[V | None]] = {}
        self._generation = 0  # a clear or forget voids the reads already under way

    async def get(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        if self.fresh <= 0:
            return await load()
        entry = self._entries.get(key)
        if entry is not None:
            age = time.monotonic() - entry[0]
            if age <= self.max_age:
                if age > self.fresh and key not in self._loading:
                    self._start(key, load)
                return entry[1]
        task = self._loading.get(key) or self._start(key, load)
        return await asyncio.shield(task)  # a caller that goes away leaves the read to the others

    def _start(self, key: K, load: Callable[[], Awaitable[V | None]]) -> asyncio.Task[V | None]:
        task = asyncio.create_task(self._load(key, load, self._generation))
        self._loading[key] = task
        task.add_done_callback(lambda done: self._done(key, done))
        return task

    async def _load(self, key: K, load: Callable[[], Awaitable[V | None]], generation: int) -> V | None:
        started = time.monotonic()
        value = await load()
        if generation == self._generation:
            if value is None:
                self._entries.pop(key, None)
            else:
                try:
                    self._entries[key] = (started, value)  # as old as the moment the read began
                except ValueError:  # larger than the whole bound: answered, not kept
                    self._entries.pop(key, None)
        return value

    def _done(self, key: K, task: asyncio.Task[V | None]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled() and task.exception() is not None:
            # a background read's failure is only logged: the entry ages out and a request
            # past `max_age` reads it itself (and gets the error)
            log.debug("read of %s failed: %r", key, task.exception())

    def forget(self, match: object) -> None:
        """Drop every entry whose key is `match` or a tuple that contains it; a request from now
        on starts a read of its own rather than wait for one begun before."""
        self._generation += 1
        for key in [k for k in self._entries if k == match or (isinstance(k, tuple) and match in k)]:
            self._entries.pop(key, None)
        for key in [k for k in self._loading if k == match or (isinstance(k, tuple) and match in k)]:
            del self._loading[key]

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._loading.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _json_size(entry: tuple[float, Any]) -> int:
    """What an entry weighs: the length of its value's JSON (measured once, when stored)."""
    value = entry[1]
    if isinstance(value, BaseModel):
        return len(value.__pydantic_serializer__.to_json(value))
    return len(json.dumps(value, default=str))


class ReadCaches:
    """The API process's caches (`services(request).read_cache`)."""

    def __init__(
        self, auth_seconds: float, status_seconds: float, status_max_bytes: int = 64 * 1024 * 1024
    ) -> None:
        # read again at 4/5 of the bound, so that a token in use never waits on PostgreSQL
        ahead = AUTH_REFRESH_AT * auth_seconds
        self.tokens: Refreshed[str, KnownToken] = Refreshed(ahead, auth_seconds)  # SHA-256 of the token
        self.cpos: Refreshed[int, Cpo] = Refreshed(ahead, auth_seconds)
        # (CPO id, job id, page, limit) -> the status body
        self.statuses: Refreshed[tuple[int, str, int, int], JobStatusOut] = Refreshed(
            status_seconds, STALE_FACTOR * status_seconds, max_bytes=status_max_bytes
        )
