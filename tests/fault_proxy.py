"""A fault-injecting HTTP proxy between the workers and moto.

It forwards every call to the real moto server, except those a test has armed a fault for:
ECS's `ThrottlingException`, a 500 `ServerException`, a dropped connection, or a permanent
`InvalidParameterException` for calls whose body names a marker (a charger identity). The
`provisioning` kind forwards the call and rewrites the answer's `lastStatus` RUNNING to
PROVISIONING, as real ECS answers RunTask (moto's tasks are born RUNNING); `lose_response`
forwards the call (moto does it) and then closes the connection without an answer, as a network
that fails on the way back.
"""

from __future__ import annotations

import http.client
import random
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

FaultKind = Literal[
    "throttle",
    "server_error",
    "drop",
    "invalid_parameter",
    "access_denied",
    "capacity",
    "delay",
    "provisioning",
    "lose_response",
]

_ERRORS: dict[str, tuple[int, str, str]] = {
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "server_error": (500, "ServerException", "injected server error"),
    "invalid_parameter": (400, "InvalidParameterException", "injected invalid parameter"),
    "access_denied": (400, "AccessDeniedException", "injected access denied"),
}


@dataclass
class Fault:
    action: str  # e.g. "RunTask"
    kind: FaultKind
    remaining: int | None = None  # None = no limit
    probability: float = 1.0
    body_contains: str | None = None
    delay_seconds: float = 0.0  # for "delay": answer normally, but this much later
    injected: int = 0


class FaultProxy:
    def __init__(self, upstream: str, seed: int = 7) -> None:
        target = urlsplit(upstream)
        self.upstream_host = target.hostname or "127.0.0.1"
        self.upstream_port = target.port or 80
        self.faults: list[Fault] = []
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def arm(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def _pick(self, action: str, body: bytes) -> Fault | None:
        with self._lock:
            self.calls[action] = self.calls.get(action, 0) + 1
            for fault in self.faults:
                if fault.action != action or fault.remaining == 0:
                    continue
                if fault.body_contains and fault.body_contains.encode() not in body:
                    continue
                if self._random.random() >= fault.probability:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                fault.injected += 1
                return fault
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                action = self.headers.get("X-Amz-Target", "").rpartition(".")[2] or "Query"
                fault = proxy._pick(action, body)
                if fault is not None and fault.kind == "delay":
                    time.sleep(fault.delay_seconds)
                    fault = None
                if fault is not None and fault.kind == "provisioning":
                    self._forward(body, as_provisioning=True)
                    return
                if fault is not None and fault.kind == "lose_response":
                    self._forward(body, answer=False)
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault is not None and fault.kind == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault is not None and fault.kind == "capacity":  # RunTask answers 200 + failures
                    payload = (
                        b'{"tasks":[],"failures":[{"reason":"RESOURCE:FARGATE",'
                        b'"detail":"You have reached the limit on the number of vCPUs"}]}'
                    )
                    self._reply(200, [("Content-Type", "application/x-amz-json-1.1")], payload)
                    return
                if fault is not None:
                    status, code, message = _ERRORS[fault.kind]
                    payload = f'{{"__type":"{code}","message":"{message}"}}'.encode()
                    self._reply(status, [("Content-Type", "application/x-amz-json-1.1")], payload)
                    return
                self._forward(body)

            def do_GET(self) -> None:
                self._forward(b"")

            def _forward(self, body: bytes, as_provisioning: bool = False, answer: bool = True) -> None:
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                upstream = conn.getresponse()
                data = upstream.read()
                if not answer:
                    conn.close()
                    return
                if as_provisioning:
                    data = re.sub(rb'"lastStatus":\s*"RUNNING"', b'"lastStatus":"PROVISIONING"', data)
                skip = {"transfer-encoding", "connection", "content-length"}
                self._reply(
                    upstream.status, [(k, v) for k, v in upstream.getheaders() if k.lower() not in skip], data
                )
                conn.close()

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
