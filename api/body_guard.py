"""Request bodies are bounded and gated before anything reads them.

A bulk body is parsed into Python objects worth many times its size, so an unauthenticated or
oversized one must cost nothing: a caller without a valid token is answered 401 before a byte of
its body is read, a declared `Content-Length` over `max_body_bytes` is answered 413 at once, and
a chunked body is counted while it streams and refused (413) as soon as it passes the limit.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import authenticate
from api.problems import ApiError, is_db_down, problem_response

BODY_METHODS = {"POST", "PUT", "PATCH"}


class BodyGuard:
    def __init__(self, app: ASGIApp, gated_prefixes: tuple[str, ...] = ("/ocpi/cpos",)) -> None:
        self.app = app
        self.gated_prefixes = gated_prefixes  # paths whose callers must hold a bearer token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if scope["path"].startswith(self.gated_prefixes):
            try:  # first: an unauthenticated caller learns nothing, not even the size limit
                scope.setdefault("state", {})["principal"] = await self._principal(request)
            except ApiError as err:
                await _refuse(request, send, err)
                return
            except Exception as err:
                if not is_db_down(err):
                    raise
                await _refuse(request, send, ApiError(
                    503, "DATABASE_UNAVAILABLE", "PostgreSQL cannot be reached",
                    headers={"Retry-After": "5"}))
                return
        limit: int = scope["app"].state.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(request, send, ApiError(
                413, "PAYLOAD_TOO_LARGE",
                f"the body is larger than {limit} bytes; split the locations over several requests"))
            return
        await self.app(scope, _counting(receive, limit), send)

    @staticmethod
    async def _principal(request: Request) -> Any:
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        return await authenticate(scheme, token.strip(), request.app.state.settings,
                                  request.app.state.sessions, request.app.state.read_cache)


def _counting(receive: Receive, limit: int) -> Receive:
    """`receive`, refusing the body (413) once more than `limit` bytes have come."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # FastAPI re-raises an HTTPException from body reading as it is: a 413 problem
                raise HTTPException(413, f"the body is larger than {limit} bytes; split the "
                                         "locations over several requests",
                                    headers={"Connection": "close"})  # the rest is not read
        return message

    return counted


async def _refuse(request: Request, send: Send, err: ApiError) -> None:
    response = problem_response(request, err.status, err.code, err.detail, err.errors, err.headers)
    response.headers["Connection"] = "close"  # the unread body is not drained
    await response(request.scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
