"""Hostile or broken OCPI peers on real loopback sockets, for the egress and boundary tests.

Each is a raw asyncio TCP server (no framework in between, so it can misbehave exactly): it
counts the connections it accepted and answers every request with one behaviour.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from devstack.procs import free_port


def gzip_bomb(inflated: int) -> bytes:
    """A gzip stream of `inflated` zero bytes (~1/1000 of that on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1024 * 1024)
    parts = [packer.compress(block) for _ in range(inflated // len(block))]
    parts.append(packer.flush())
    return b"".join(parts)


def ocpi_answer(data: object) -> bytes:
    return json.dumps(
        {"data": data, "status_code": 1000, "status_message": "Success", "timestamp": "2026-01-01T00:00:00Z"}
    ).encode()


def http_response(body: bytes, status: str = "200 OK", headers: dict[str, str] | None = None) -> bytes:
    lines = [
        f"HTTP/1.1 {status}",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Peer:
    port: int
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return b""


@asynccontextmanager
async def peer(
    mode: str,
    payload: bytes = b"",
    drip_seconds: float = 2.0,
    location: str = "",
    routes: dict[str, bytes] | None = None,
    port: int | None = None,
) -> AsyncIterator[Peer]:
    """`mode`: "answer" (send `payload`, a whole HTTP response), "drip" (the status line one
    byte every `drip_seconds`, never done), "redirect" (302 to `location`), "close" (accept, then
    close without a word), "routes" (the response of `routes` whose key the path ends with)."""
    state = Peer(port or free_port())
    handlers: set[asyncio.Task[object]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        current = asyncio.current_task()
        if current is not None:
            handlers.add(current)
        try:
            if mode == "close":
                return
            head = await _read_head(reader)
            state.requests.append(head)
            if mode == "answer":
                writer.write(payload)
            elif mode == "routes":
                path = head.split(b" ")[1].decode() if head.count(b" ") >= 2 else ""
                writer.write(
                    next(
                        (r for k, r in (routes or {}).items() if path.endswith(k)),
                        http_response(b"{}", "404 Not Found"),
                    )
                )
            elif mode == "redirect":
                writer.write(http_response(b"", "302 Found", {"Location": location}))
            elif mode == "drip":
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b" " * 100000:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(drip_seconds)
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", state.port)
    try:
        yield state
    finally:
        server.close()
        for task in handlers:
            task.cancel()
