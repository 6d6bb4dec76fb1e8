"""Egress policy: every call to a URL that someone outside chose goes through `peer_request`.

An OCPI peer names the URLs we call (versions, endpoints, Receiver, callback). Without a policy
such a URL can point inside our network (the API's own /readyz, PostgreSQL, the cloud metadata
service) and its answer can take our memory. So a call here:

- goes only to http(s), with no proxy from the environment and no redirect (a 3xx is a failure);
- connects only to an address that is public or that `egress_allow` names: the host is resolved
  once, at connect time, every address is checked, and the connection is made to that checked
  address (a DNS answer that changes between a check and the connect cannot steer it inside);
  TLS SNI and the Host header stay the host name;
- has one total deadline (connect, request, every byte of the answer), not a per-read timeout;
- reads at most `max_bytes` of answer AFTER decompression, counted while it streams (our own
  bounded inflate, so a gzip bomb costs at most the cap);
- fails with one exception, `PeerUnusable`, whose text is always the same: it never echoes the
  peer's answer and never tells a refused port from a closed one, a non-OCPI answer or a
  policy refusal (the detail is logged at debug level, for operators).

Pure httpx/httpcore and the standard library: the API and the worker's activities both use it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json as jsonlib
import logging
import socket
import ssl
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

log = logging.getLogger("egress")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_DEADLINE_SECONDS = 10.0
LOOPBACK = ("127.0.0.0/8", "::1")  # what the dev stack and the tests allow
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
READ_SLACK = 64 * 1024  # compressed bytes read beyond the cap before giving up


class PeerUnusable(Exception):
    """The peer could not be used. Deliberately the same text whatever went wrong."""

    MESSAGE = "the peer could not be used"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class _Refused(Exception):
    """Internal: why a call failed, for the debug log only."""


def _public(ip: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private (RFC 1918, ULA), link-local (metadata),
    multicast, reserved, unspecified, shared (CGNAT 100.64/10), documentation..."""
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
    )


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is where it leads."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """What may be called: public addresses, plus the networks and host names allowed."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    max_bytes: int = DEFAULT_MAX_BYTES
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS

    @classmethod
    def from_entries(
        cls,
        entries: Iterable[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    ) -> EgressPolicy:
        """`entries`: CIDR networks or addresses ("10.0.0.0/8", "::1") and host names."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts), max_bytes, deadline_seconds)

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def _listed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)

    def address_allowed(self, address: str | IPAddress) -> bool:
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return False
        inner = _embedded_v4(ip)
        if self._listed(ip) or (inner is not None and self._listed(inner)):
            return True
        return _public(ip) and (inner is None or _public(inner))


@dataclass(frozen=True)
class PeerResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        """The body as JSON; anything unparseable (deep nesting included) is `PeerUnusable`."""
        try:
            return jsonlib.loads(self.body)
        except Exception as err:  # ValueError, RecursionError, UnicodeDecodeError...
            log.debug("peer answer is not JSON: %r", err)
            raise PeerUnusable() from None


async def resolve(host: str, port: int) -> list[str]:
    """Every address of `host` (tests replace this to play a rebinding DNS)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_address(host: str, port: int, policy: EgressPolicy) -> str:
    """The address to connect to: resolved now, every address allowed, or `_Refused`."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if not policy.address_allowed(literal):
            raise _Refused(f"address {host} is not allowed")
        return str(literal)
    addresses = await resolve(host, port)
    if not addresses:
        raise _Refused(f"{host} has no address")
    if not policy.host_allowed(host):
        refused = [a for a in addresses if not policy.address_allowed(a)]
        if refused:
            raise _Refused(f"{host} resolves to {refused[0]}, which is not allowed")
    return addresses[0]


async def check_url(url: str, policy: EgressPolicy) -> None:
    """`PeerUnusable` unless `url` is http(s) and its host resolves to allowed addresses now.
    For URLs a peer lists (stored for later): each call checks again when it connects."""
    try:
        parsed = _parse(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        async with asyncio.timeout(policy.deadline_seconds):
            await checked_address(parsed.host, port, policy)
    except Exception as err:
        log.debug("egress check of %.120s refused: %r", url, err)
        raise PeerUnusable() from None


def _parse(url: str) -> httpx.URL:
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.userinfo:
        raise _Refused("only http(s) URLs with a host and no user info")
    return parsed


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks at connect time, then connects to the checked address."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await checked_address(host, port, self.policy)
        return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise _Refused("no unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


_ssl: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """One verifying context per process (making one loads the CA bundle: milliseconds)."""
    global _ssl
    if _ssl is None:
        _ssl = httpx.create_ssl_context()
    return _ssl


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False)
        # httpx offers no argument for the network backend: its pool is rebuilt with ours
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=1,
            max_keepalive_connections=0,
            http1=True,
            http2=False,
            network_backend=_GuardedBackend(policy),
        )


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    """The body, inflated by us with a bound on the output, never more than `cap` bytes."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        inflate = None
    elif encoding in ("gzip", "x-gzip", "deflate"):
        inflate = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header
    else:
        raise _Refused(f"content-encoding {encoding[:20]!r}")
    out = bytearray()
    raw = 0
    async for chunk in response.aiter_raw():
        raw += len(chunk)
        if raw > cap + READ_SLACK:
            raise _Refused("answer larger than the cap")
        if inflate is None:
            out += chunk
        else:
            data = chunk
            while data:
                out += inflate.decompress(data, cap + 1 - len(out))
                if len(out) > cap:
                    break
                data = inflate.unconsumed_tail
        if len(out) > cap:
            raise _Refused("answer larger than the cap")
    if inflate is not None:
        out += inflate.flush()
    if len(out) > cap:
        raise _Refused("answer larger than the cap")
    return bytes(out)


async def peer_request(
    method: str,
    url: str,
    *,
    policy: EgressPolicy,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    max_bytes: int | None = None,
    deadline_seconds: float | None = None,
    content: bytes | None = None,
) -> PeerResponse:
    """One call to a peer-chosen URL under `policy`; `PeerUnusable` on any failure. Any status
    but 3xx is returned (the caller judges it); the whole call is bounded in time and bytes.
    The body is `json`, or `content` as is (a signed body must go byte for byte)."""
    cap = max_bytes or policy.max_bytes
    deadline = deadline_seconds or policy.deadline_seconds
    try:
        async with asyncio.timeout(deadline):
            parsed = _parse(url)
            sent = {"Accept-Encoding": "gzip, deflate", **(headers or {})}
            async with (
                httpx.AsyncClient(
                    transport=_GuardedTransport(policy),
                    follow_redirects=False,
                    trust_env=False,
                    timeout=httpx.Timeout(deadline),
                ) as client,
                client.stream(method, parsed, headers=sent, json=json, content=content) as response,
            ):
                if 300 <= response.status_code < 400:
                    raise _Refused(f"redirect (HTTP {response.status_code})")
                declared = response.headers.get("content-length", "")
                if declared.isascii() and declared.isdigit() and int(declared) > cap + READ_SLACK:
                    raise _Refused("declared answer larger than the cap")
                body = await _read_capped(response, cap)
                return PeerResponse(response.status_code, dict(response.headers), body)
    except Exception as err:
        log.debug("egress %s %.120s failed: %r", method, url, err)
        raise PeerUnusable() from None
