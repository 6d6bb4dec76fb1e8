"""Request bodies are bounded and gated before anything reads them.

A bulk body is parsed into Python objects worth many times its size, so an unauthenticated or
oversized one must cost nothing: a caller without a valid token is answered 401 before a byte of
its body is read, a declared `Content-Length` over `max_body_bytes` is answered 413 at once, and
a chunked body is counted while it streams and refused (413) as soon as it passes the limit.
OCPI bodies (`/ocpi/cpo/...`) likewise: the eMSP's `Token` first, then `ocpi_max_body_bytes`.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import authenticate
from api.ocpi.transport import CLIENT_ERROR, SERVER_ERROR, OcpiError, identify, ocpi_json
from api.problems import DATABASE_DOWN, ApiError, is_db_down, problem_response
from api.state import services

BODY_METHODS = {"POST", "PUT", "PATCH"}
OCPI_PREFIX = "/ocpi/cpo/"  # the eMSPs' OCPI interface: `Authorization: Token ...`


class BodyGuard:
    def __init__(self, app: ASGIApp, gated_prefixes: tuple[str, ...] = ("/ocpi/cpos",)) -> None:
        self.app = app
        self.gated_prefixes = gated_prefixes  # paths whose callers must hold a bearer token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if scope["path"].startswith(OCPI_PREFIX):
            await self._ocpi(request, scope, receive, send)
            return
        if scope["path"].startswith(self.gated_prefixes):
            try:  # first: an unauthenticated caller learns nothing, not even the size limit
                scope.setdefault("state", {})["principal"] = await self._principal(request)
            except ApiError as err:
                await _refuse(request, send, err)
                return
            except Exception as err:
                if not is_db_down(err):
                    raise
                await _refuse(
                    request,
                    send,
                    ApiError(503, "DATABASE_UNAVAILABLE", DATABASE_DOWN, headers={"Retry-After": "5"}),
                )
                return
        limit: int = scope["app"].state.services.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and not _within(declared, limit):
            await _refuse(
                request,
                send,
                ApiError(
                    413,
                    "PAYLOAD_TOO_LARGE",
                    f"the body is larger than {limit} bytes; split the locations over several requests",
                ),
            )
            return
        await self.app(scope, _counting(receive, limit), send)

    async def _ocpi(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        """OCPI: the `Token` is checked first (an OCPI 401 envelope), then the body is capped at
        `ocpi_max_body_bytes` (a credentials object is well under 1 KiB)."""
        state = services(request)
        cpo_id = scope["path"][len(OCPI_PREFIX) :].partition("/")[0]
        try:
            caller = await identify(
                state.sessions, state.settings, cpo_id, request.headers.get("authorization")
            )
        except OcpiError as err:
            await _refuse_ocpi(
                request, send, ocpi_json(None, err.status_code, err.message, err.http_status, err.headers)
            )
            return
        except Exception as err:
            if not is_db_down(err):
                raise
            await _refuse_ocpi(
                request, send, ocpi_json(None, SERVER_ERROR, DATABASE_DOWN, 503, {"Retry-After": "5"})
            )
            return
        scope.setdefault("state", {})["ocpi_caller"] = caller  # api.ocpi.transport.get_caller
        limit: int = state.settings.ocpi_max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and not _within(declared, limit):
            await _refuse_ocpi(
                request, send, ocpi_json(None, CLIENT_ERROR, f"the body is larger than {limit} bytes", 413)
            )
            return
        # A credentials object is small: read it here, whole, and refuse it here past the limit
        # (an error raised from `receive` would reach the sub-app's middleware as a group).
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > limit:
                await _refuse_ocpi(
                    request,
                    send,
                    ocpi_json(None, CLIENT_ERROR, f"the body is larger than {limit} bytes", 413),
                )
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    @staticmethod
    async def _principal(request: Request) -> Any:
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        return await authenticate(
            scheme,
            token.strip(),
            services(request).settings,
            services(request).sessions,
            services(request).read_cache,
        )


def _within(declared: str, limit: int) -> bool:
    """A Content-Length of plain ASCII digits ("²".isdigit() is True too) within `limit`."""
    return declared.isascii() and declared.isdigit() and int(declared) <= limit


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for a body already read: the body once, then whatever the server says next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _counting(receive: Receive, limit: int) -> Receive:
    """`receive`, refusing the body (413) once more than `limit` bytes have come."""
    seen = 0
    detail = f"the body is larger than {limit} bytes; split the locations over several requests"

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # FastAPI re-raises an HTTPException from body reading as it is: a 413 problem
                raise HTTPException(413, detail, headers={"Connection": "close"})  # the rest is not read
        return message

    return counted


async def _refuse(request: Request, send: Send, err: ApiError) -> None:
    response = problem_response(request, err.status, err.code, err.detail, err.errors, err.headers)
    response.headers["Connection"] = "close"  # the unread body is not drained
    await response(request.scope, _no_receive, send)


async def _refuse_ocpi(request: Request, send: Send, response: Response) -> None:
    response.headers["Connection"] = "close"
    for name in ("X-Request-ID", "X-Correlation-ID"):
        response.headers[name] = (request.headers.get(name) or str(uuid.uuid4()))[:255]
    await response(request.scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
