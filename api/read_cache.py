"""What every poll asks again, remembered briefly by each API process.

With 20 clients polling one job, each GET used to be four round trips to PostgreSQL (the token,
the CPO, the job row, its counts by state) and ~6 ms of CPU in the API; the answers change far
more slowly than they are asked for. A poll now costs no database work while its answers are
fresh:

- a CPO token's owner for `auth_cache_seconds` (never past the token's expiry; a revoke in this
  process forgets at once, the other processes within that time; unknown tokens are not kept, so
  a caller spraying tokens cannot fill the cache);
- the CPO of a path for the same time (its name and party never change after creation);
- a job's status page for `status_cache_seconds` (cancelling through this process forgets it).

Keys always carry the CPO, so one tenant never reads another's entry. Bounded (LRU) so memory
stays flat whatever the callers send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from cachetools import TTLCache

from db.models import utcnow

if TYPE_CHECKING:
    from api.deps import Cpo
    from api.schemas import JobStatusOut

K = TypeVar("K")
V = TypeVar("V")

MAX_ENTRIES = 10_000


class Recent(Generic[K, V]):
    """A bounded TTL map; a TTL of 0 keeps nothing."""

    def __init__(self, seconds: float) -> None:
        self._entries: TTLCache[K, V] | None = TTLCache(MAX_ENTRIES, seconds) if seconds > 0 else None

    def get(self, key: K) -> V | None:
        return None if self._entries is None else self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        if self._entries is not None:
            self._entries[key] = value

    def forget(self, match: object) -> None:
        """Drop every entry whose key is `match` or a tuple that contains it."""
        if self._entries is None:
            return
        for key in [k for k in self._entries if k == match or (isinstance(k, tuple) and match in k)]:
            self._entries.pop(key, None)

    def clear(self) -> None:
        if self._entries is not None:
            self._entries.clear()


@dataclass(frozen=True)
class KnownToken:
    cpo_id: int
    expires_at: datetime | None

    def valid(self) -> bool:
        return self.expires_at is None or self.expires_at > utcnow()


class ReadCaches:
    """The API process's caches (`app.state.read_cache`)."""

    def __init__(self, auth_seconds: float, status_seconds: float) -> None:
        self.tokens: Recent[str, KnownToken] = Recent(auth_seconds)  # SHA-256 of the token
        self.cpos: Recent[int, Cpo] = Recent(auth_seconds)
        # (CPO id, job id, page, limit) -> the status body
        self.statuses: Recent[tuple[int, str, int, int], JobStatusOut] = Recent(status_seconds)
