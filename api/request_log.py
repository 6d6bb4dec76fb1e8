"""Every log line of a request carries its context: request id, method, path, CPO id, and the
job id once a route knows it (`observability.logs.bind`). The request id is the caller's
`X-Request-ID` when it sends a sane one, else a new one, and is echoed on the response."""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability.logs import request_context

_CPO = re.compile(r"^/ocpi/cpos/(\d{1,18})(?:/|$)")
_JOB = re.compile(r"/locations/jobs/(job-[0-9a-f]{32})(?:/|$)")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestLogContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = given if _SANE_ID.match(given) else uuid.uuid4().hex
        cpo = _CPO.match(path)
        job = _JOB.search(path)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("X-Request-ID", request_id)
            await send(message)

        with request_context(
            request_id=request_id,
            method=scope["method"],
            path=path,
            cpo_id=cpo.group(1) if cpo else None,
            job_id=job.group(1) if job else None,
        ):
            await self.app(scope, receive, send_with_id)
