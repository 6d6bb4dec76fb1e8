"""What operators rely on: the metrics of both processes after a real job, one trace from the
POST to the ECS call, log lines with their job/location/workflow/activity context, readiness
that names what is down, and the worker's health check."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.ecs_client import ecs_client, secrets_client
from api.app import create_app
from contracts.temporal import connect
from db.engine import make_sessionmaker
from devstack.procs import free_port
from observability.logs import TextFormatter, make_handler, request_context
from observability.tracing import init_tracing, stop_tracing, temporal_plugins, traced_aws_client
from settings import Settings
from tests.helpers import charger, create_cpo, location, submit, unique, wait_for_job
from tests.suite_stack import asgi_client
from worker import health
from worker.telemetry import heartbeat, metrics_url, worker_runtime
from worker.workers import build_workers


def samples(text: str, name: str, **labels: str) -> list[float]:
    """The values of the series `name` whose labels include `labels`. (The parser calls a
    counter's samples `…_total` even where the exposition, as the SDK's, has no suffix.)"""
    return [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if name in (s.name, s.name.removesuffix("_total"))
        and all(s.labels.get(k) == v for k, v in labels.items())
    ]


@asynccontextmanager
async def own_stack(
    settings: Settings, engine: AsyncEngine, client: Client, queue: str, ecs_wrap: Any = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Workers on their own task queues with `client`, and an app that starts jobs there."""
    own = settings.model_copy(update={"task_queue": f"{queue}-main", "ecs_task_queue": f"{queue}-ecs"})
    async with ecs_client(own) as raw_ecs, secrets_client(own) as sm:
        ecs = ecs_wrap(raw_ecs) if ecs_wrap else raw_ecs
        workers = build_workers(client, own, make_sessionmaker(engine), ecs, sm)
        runs = [asyncio.create_task(w.run()) for w in workers]
        app = create_app(own, temporal_client=client)
        try:
            async with asgi_client(app, "http://gateway.test") as http:
                yield http
        finally:
            await asyncio.gather(*(w.shutdown() for w in workers))
            await asyncio.gather(*runs, return_exceptions=True)


def server_address(temporal: WorkflowEnvironment) -> str:
    return temporal.client.service_client.config.target_host


async def test_metrics_of_worker_and_api_after_a_job(
    settings: Settings, temporal: WorkflowEnvironment, engine: AsyncEngine, admin: dict[str, str]
) -> None:
    port = free_port()
    own = settings.model_copy(
        update={"worker_metrics_port": port, "temporal_address": server_address(temporal)}
    )
    client = await connect(own, runtime=worker_runtime(own))
    async with own_stack(own, engine, client, "metrics") as http:
        cpo_id, token = await create_cpo(http, admin)
        locations = [
            location("M0", [charger(unique("MET"))]),
            location("M1", [charger(unique("MET"))]),
            location("M2", []),
        ]
        accepted = await submit(http, cpo_id, token, locations)
        job = await wait_for_job(http, accepted["status_url"], token)
        assert job["status"] == "READY", job
        assert (await http.get("/no/such/path")).status_code == 404
        api_text = (await http.get("/metrics")).text

    url = metrics_url(own)
    assert url == f"http://127.0.0.1:{port}/metrics"
    async with httpx.AsyncClient() as scraper:
        worker_text = (await scraper.get(url)).text

    # ours, with real values: three locations READY, two RunTask calls (one per charger)
    assert sum(samples(worker_text, "ocpplab_locations_total", outcome="READY")) == 3
    assert sum(samples(worker_text, "ocpplab_locations_total", outcome="FAILED")) == 0
    assert sum(samples(worker_text, "ocpplab_location_ready_seconds_count")) == 3
    assert sum(samples(worker_text, "ocpplab_location_ready_seconds_sum")) > 0
    assert sum(samples(worker_text, "ocpplab_run_task_seconds_count", result="started")) == 2
    # the SDK's own, from the same endpoint
    assert "\ntemporal_workflow_completed{" in worker_text
    assert samples(worker_text, "temporal_workflow_completed", workflow_type="BulkCreateLocations") == [1]
    # RunTask is a local activity of the child when no ECS rate limit is set
    assert samples(
        worker_text, "temporal_local_activity_execution_latency_count", activity_type="start_charger_task"
    )

    route = "/ocpi/cpos/{cpo_id}/locations"
    assert samples(api_text, "ocpplab_api_requests_total", route=route, method="POST", status="202") == [1]
    polls = samples(
        api_text, "ocpplab_api_requests_total", route=route + "/jobs/{job_id}", method="GET", status="200"
    )
    assert polls and polls[0] >= 1
    assert samples(api_text, "ocpplab_api_requests_total", route="<unrouted>", status="404") == [1]
    assert samples(api_text, "ocpplab_api_request_duration_seconds_count", route=route, method="POST") == [1]
    assert samples(api_text, "process_resident_memory_bytes")

    # the worker's health check reads this same endpoint
    assert health.problems(own.model_copy(update={"worker_health_file": None})) != []  # no heartbeat
    beat_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"ocpplab-test-{port}.alive"
    beat_file.touch()
    assert health.problems(own.model_copy(update={"worker_health_file": str(beat_file)})) == []
    beat_file.unlink()


async def test_metrics_token_guards_the_api_endpoint(
    settings: Settings, temporal: WorkflowEnvironment
) -> None:
    app = create_app(
        settings.model_copy(update={"api_metrics_token": "scrape-secret"}), temporal_client=temporal.client
    )
    async with asgi_client(app, "http://t") as http:
        assert (await http.get("/metrics")).status_code == 401
        ok = await http.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert ok.status_code == 200 and "ocpplab_api_requests_total" in ok.text


async def test_one_trace_from_the_post_to_the_ecs_call(
    settings: Settings, temporal: WorkflowEnvironment, engine: AsyncEngine, admin: dict[str, str]
) -> None:
    exporter = InMemorySpanExporter()
    assert init_tracing(None, "ocpplab-test", exporter=exporter)
    try:
        own = settings.model_copy(update={"temporal_address": server_address(temporal)})
        client = await connect(own, plugins=temporal_plugins())
        async with own_stack(
            own, engine, client, "traces", ecs_wrap=lambda raw: traced_aws_client(raw, "ECS")
        ) as http:
            cpo_id, token = await create_cpo(http, admin)
            accepted = await submit(http, cpo_id, token, [location("T0", [charger(unique("TRC"))])])
            job = await wait_for_job(http, accepted["status_url"], token)
            assert job["status"] == "READY", job
            wanted = {
                "POST /ocpi/cpos/{cpo_id}/locations",
                "StartWorkflow:BulkCreateLocations",
                "RunWorkflow:BulkCreateLocations",
                "StartChildWorkflow:ProvisionLocation",
                "RunWorkflow:ProvisionLocation",
                "RunActivity:start_charger_task",
                "ECS.RunTask",
                "RunActivity:activate_location",
                "RunActivity:finalize_job",
            }
            deadline = time.monotonic() + 15
            while True:  # workflow spans end when their workflow task completes
                spans = exporter.get_finished_spans()
                post = [
                    s
                    for s in spans
                    if s.name == "POST /ocpi/cpos/{cpo_id}/locations" and s.kind.name == "SERVER"
                ]
                trace_id = post[0].context.trace_id if post else None
                in_trace = {s.name for s in spans if s.context.trace_id == trace_id}
                if wanted <= in_trace or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        assert post, sorted({s.name for s in spans})
        assert wanted <= in_trace, sorted(in_trace)
        ecs_span = next(s for s in spans if s.name == "ECS.RunTask" and s.context.trace_id == trace_id)
        assert ecs_span.attributes and ecs_span.attributes["rpc.method"] == "RunTask"
    finally:
        stop_tracing()


async def test_log_lines_carry_their_context(
    app_client: httpx.AsyncClient, workers: Any, admin: dict[str, str]
) -> None:
    stream = io.StringIO()
    handler = make_handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        cpo_id, token = await create_cpo(app_client, admin)
        accepted = await submit(app_client, cpo_id, token, [location("L0", [charger(unique("LOG"))])])
        job_id = accepted["job_id"]
        job = await wait_for_job(app_client, accepted["status_url"], token)
        assert job["status"] == "READY", job
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]

    api = [line for line in lines if line["logger"] == "api.locations" and line.get("job_id") == job_id]
    assert api, lines
    assert api[0]["cpo_id"] == cpo_id and api[0]["method"] == "POST" and api[0]["request_id"]
    assert api[0]["level"] == "INFO" and "accepted" in api[0]["message"]

    def of(activity_type: str) -> dict[str, Any]:
        found = [
            line
            for line in lines
            if line.get("activity_type") == activity_type and line.get("job_id") == job_id
        ]
        assert found, [line for line in lines if line.get("job_id") == job_id]
        return found[0]

    for line in (of("start_charger_task"), of("activate_location")):
        assert line["location_index"] == 0
        assert line["workflow_id"] == f"{job_id}/location-0"
        assert line["workflow_type"] == "ProvisionLocation"
        assert line["activity_id"] and line["run_id"] and line["attempt"] == 1

    # the text format (make run) shows the same context after the message
    record = logging.LogRecord("api", logging.INFO, __file__, 1, "hello", (), None)
    text_handler = make_handler("text", io.StringIO())
    with request_context(job_id="job-abc", cpo_id="7"):
        text_handler.filter(record)
    assert TextFormatter().format(record).endswith("hello [cpo_id=7 job_id=job-abc]")


async def test_readyz_names_what_is_down(
    settings: Settings, temporal: WorkflowEnvironment, app_client: httpx.AsyncClient
) -> None:
    ready = await app_client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"postgres": "ok", "temporal": "ok"}

    async def readyz(**overrides: Any) -> httpx.Response:
        client = None if "temporal_address" in overrides else temporal.client
        app = create_app(settings.model_copy(update=overrides), temporal_client=client)
        async with asgi_client(app, "http://t") as http:
            return await asyncio.wait_for(http.get("/readyz"), timeout=20)

    no_temporal = await readyz(temporal_address=f"127.0.0.1:{free_port()}")
    assert no_temporal.status_code == 503
    assert no_temporal.headers["content-type"] == "application/problem+json"
    body = no_temporal.json()
    assert body["code"] == "TEMPORAL_UNAVAILABLE" and body["detail"] == "Temporal cannot be reached"
    assert body["checks"] == {"postgres": "ok", "temporal": "unavailable"}

    no_postgres = await readyz(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    assert no_postgres.status_code == 503
    body = no_postgres.json()
    assert body["code"] == "DATABASE_UNAVAILABLE" and body["detail"] == "PostgreSQL cannot be reached"
    assert body["checks"] == {"postgres": "unavailable", "temporal": "ok"}


async def test_worker_heartbeat_and_health_check(settings: Settings, tmp_path: Path) -> None:
    own = settings.model_copy(
        update={"worker_health_file": str(tmp_path / "alive"), "worker_health_interval_seconds": 0.05}
    )
    assert health.problems(own)[0].startswith("no heartbeat file")
    running = asyncio.create_task(asyncio.sleep(3600))
    beat = asyncio.create_task(heartbeat(own, [running]))
    await asyncio.sleep(0.2)
    assert health.problems(own) == []
    assert health.problems(own, now=time.time() + 1)[0].startswith("heartbeat")  # stale
    running.cancel()  # a worker stopped: the heartbeat stops and the file goes
    await asyncio.wait_for(beat, timeout=2)
    assert not (tmp_path / "alive").exists()
    closed = own.model_copy(update={"worker_metrics_port": free_port()})
    (tmp_path / "alive").touch()
    assert any("does not answer" in p for p in health.problems(closed))


def test_grafana_dashboard_uses_the_metric_names_we_expose() -> None:
    import re

    from activities import metrics
    from settings import ROOT

    dashboard = json.loads((ROOT / "deploy/grafana/ocpplab-gateway.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    used = set(re.findall(r"\bocpplab_[a-z_]+", exprs))
    ours = {
        metrics.LOCATIONS,
        metrics.RUN_TASK_SECONDS,
        metrics.LOCATION_READY_SECONDS,
        "ocpplab_api_requests_total",
        "ocpplab_api_request_duration_seconds",
    }
    suffixes = ("_bucket", "_count", "_sum")
    assert {next((u.removesuffix(s) for s in suffixes if u.endswith(s)), u) for u in used} == ours
