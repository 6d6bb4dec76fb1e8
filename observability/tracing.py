"""Traces from the POST through the workflow and its activities to the ECS call.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (then spans go there over OTLP/HTTP, batched).
When on: FastAPI's own telemetry makes a server span per request, the Temporal client of
each process carries the SDK's `OpenTelemetryPlugin` (its trace context travels in the
workflow and activity headers, so a POST, the workflow it starts, the children and their
activities share one trace id), and each ECS call gets a client span. The provider is the SDK's
replay-safe one (`create_tracer_provider`): a replayed workflow task does not emit its spans
again.

botocore's OpenTelemetry instrumentation patches botocore's synchronous `_make_api_call`, which
aiobotocore overrides with its own coroutine, so it never sees our calls: `traced_aws_client`
wraps the ECS client's operations in spans named as that instrumentation names them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider
from temporalio.plugin import SimplePlugin

_active: dict[str, Any] = {}


def init_tracing(endpoint: str | None, service_name: str, exporter: SpanExporter | None = None) -> bool:
    """Install the process's tracer provider; False (and nothing installed) without an endpoint.
    `exporter` replaces OTLP (the tests' in-memory exporter). Idempotent."""
    if _active:
        return True
    if exporter is not None:
        processor: Any = SimpleSpanProcessor(exporter)
    elif endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        traces_url = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or endpoint.rstrip("/") + "/v1/traces"
        )
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url))
    else:
        return False
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = create_tracer_provider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)  # once per process: OpenTelemetry ignores a second one
    _active["provider"] = provider
    return True


def tracing_active() -> bool:
    return bool(_active)


def stop_tracing() -> None:
    """Flush and stop tracing new clients, apps and ECS clients (the tests' teardown)."""
    provider = _active.pop("provider", None)
    if provider is not None:
        provider.force_flush()


def temporal_plugins() -> list[SimplePlugin]:
    """The plugins of a Temporal client (and so of the workers built on it)."""
    return [OpenTelemetryPlugin(add_temporal_spans=True)] if tracing_active() else []


def fastapi_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry (`FastAPI(telemetry=…)`): a server span per request, with
    spans of its dependencies and serialization, on our provider; off when tracing is off, even
    if some other code set a global provider. Its metrics and logs stay off: the API's metrics
    are Prometheus (`api/metrics.py`), its logs ours."""
    quiet = {"/healthz", "/readyz", "/metrics"}
    return {
        "tracing": tracing_active(),
        "tracer_provider": _active.get("provider"),
        "metrics": False,
        "logs": False,
        "auto_configure": False,
        "exclude": lambda scope: scope.get("path") in quiet,
    }


class TracedAwsClient:
    """An aiobotocore client whose API operations run in a client span (`ECS.RunTask`…)."""

    def __init__(self, client: Any, service: str) -> None:
        self._client = client
        self._service = service
        self._operations: dict[str, str] = dict(client.meta.method_to_api_mapping)
        self._tracer = trace.get_tracer("ocpplab.aws")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        operation = self._operations.get(name)
        if operation is None or not callable(attr):
            return attr
        return self._traced(attr, operation)

    def _traced(self, call: Callable[..., Awaitable[Any]], operation: str) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(call)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            with self._tracer.start_as_current_span(
                f"{self._service}.{operation}",
                kind=SpanKind.CLIENT,
                attributes={
                    "rpc.system": "aws-api",
                    "rpc.service": self._service,
                    "rpc.method": operation,
                    "cloud.region": self._client.meta.region_name,
                },
                record_exception=True,
                set_status_on_exception=True,
            ) as span:
                response = await call(*args, **kwargs)
                meta = response.get("ResponseMetadata", {}) if isinstance(response, dict) else {}
                if meta.get("RequestId"):
                    span.set_attribute("aws.request_id", meta["RequestId"])
                if isinstance(response, dict) and response.get("failures"):
                    span.set_status(Status(StatusCode.ERROR, "RunTask failures"))
                return response

        return traced


def traced_aws_client(client: Any, service: str) -> Any:
    return TracedAwsClient(client, service) if tracing_active() else client
