"""The API's Prometheus metrics: requests by route template, method and status, and latency.

Served at `GET /metrics` on the API's own port, outside the OpenAPI document. Unauthenticated by
default, as scrape endpoints usually are: the series hold route templates and counts, never ids
or tenant data; keep `/metrics` off the public load balancer, or set `API_METRICS_TOKEN` and
scrape with that bearer token. Each app has its own registry (the tests build many apps), with
the process collector's CPU, memory and file descriptors.
"""

from __future__ import annotations

import hmac
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response
from api.state import services

# One label for every request no route took: unknown paths (scanners cannot blow up the series)
# and the requests the body guard refused before routing (401/413 on a bulk POST).
UNROUTED = "<unrouted>"


# fine at the low end: the status poll is served from memory in a few milliseconds
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "ocpplab_api_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ocpplab_api_request_duration_seconds",
            "HTTP request latency by route template and method",
            ["route", "method"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        # the part of a bulk POST's latency spent in Temporal (start or find the job's workflow)
        self.workflow_start = Histogram(
            "ocpplab_api_workflow_start_duration_seconds",
            "Time to start (or find) a job's workflow in Temporal, within a bulk POST",
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )


def route_label(scope: Scope, root_path: str) -> str:
    """The path template the router chose (`/ocpi/cpos/{cpo_id}/locations`), behind the prefix of
    any mount it went through (routing grows `root_path` in place as it enters a mount)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not template:
        return UNROUTED
    return scope.get("root_path", "")[len(root_path) :] + template


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500  # what the client gets if the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_label(scope, root_path)
            method = scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)


async def metrics_endpoint(request: Request) -> Response:
    token: str | None = services(request).settings.api_metrics_token
    if token:
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return problem_response(
                request,
                401,
                "UNAUTHORIZED",
                "the metrics token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
    metrics: ApiMetrics = services(request).metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
