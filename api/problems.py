"""RFC 9457 problem details with a stable `code`, for every error the API returns."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger("api")
PROBLEM_JSON = "application/problem+json"
# What a tenant is told when a component is down: which one, by its role, never where it is
# (host and port stay in the logs).
DATABASE_DOWN = "the database is unavailable; retry later"
TEMPORAL_DOWN = "the workflow service is unavailable; retry later"


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class Problem(BaseModel):
    """The body of every error response."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers


TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
DEFAULT_CODES = {
    400: "MALFORMED_BODY",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


def problem_response(
    request: Request,
    status: int,
    code: str,
    detail: str | None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=f"urn:ocpplab:problem:{code.lower()}",
        title=TITLES.get(status, "Error"),
        status=status,
        code=code,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'locations', 3, 'address') -> 'locations[3].address'."""
    path = ""
    for part in loc:
        if part in ("body", "query", "path", "header") and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def validation_errors(raw: list[dict[str, Any]] | Any) -> list[FieldError]:
    return [
        FieldError(
            field=field_path(e.get("loc", ())),
            message=e.get("msg", "invalid"),
            type=e.get("type", "value_error"),
        )
        for e in raw
    ]


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(request, 400, "MALFORMED_BODY", "the body is not valid JSON")
    if any(e.get("loc") == ("body",) and e.get("type") == "missing" for e in errors):
        return problem_response(request, 400, "MALFORMED_BODY", "a JSON body is required")
    fields = validation_errors(errors)
    detail = f"{len(fields)} invalid field(s): " + ", ".join(f.field for f in fields[:10])
    return problem_response(request, 422, "VALIDATION_ERROR", detail, fields)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(request, exc.status, exc.code, exc.detail, exc.errors, exc.headers)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    return problem_response(
        request,
        status,
        DEFAULT_CODES.get(status, "ERROR"),
        str(exc.detail),
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _database(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unreachable: %s", exc)
    return problem_response(request, 503, "DATABASE_UNAVAILABLE", DATABASE_DOWN, headers={"Retry-After": "5"})


async def _temporal(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        log.warning("Temporal unreachable: %s", exc)
        return problem_response(
            request, 503, "TEMPORAL_UNAVAILABLE", TEMPORAL_DOWN, headers={"Retry-After": "5"}
        )
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, 500, "INTERNAL_ERROR", "an unexpected error occurred")


def is_db_down(exc: Exception) -> bool:
    if isinstance(exc, OperationalError | PoolTimeoutError | psycopg.OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def _dbapi(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, IntegrityError):  # a uniqueness conflict no route expected: still the caller's
        log.info("conflict on %s %s: %s", request.method, request.url.path, exc.orig)
        return problem_response(request, 409, "CONFLICT", "the request conflicts with an existing resource")
    if is_db_down(exc):
        return await _database(request, exc)
    return await _unexpected(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(DBAPIError, _dbapi)
    app.add_exception_handler(PoolTimeoutError, _database)
    app.add_exception_handler(psycopg.OperationalError, _database)
    app.add_exception_handler(RPCError, _temporal)
    app.add_exception_handler(Exception, _unexpected)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer."""
    return {
        s: {
            "model": Problem,
            "description": TITLES.get(s, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in statuses
    }
