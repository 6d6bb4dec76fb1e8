"""`python -m worker`: run the workers until SIGINT/SIGTERM, then shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal

from activities.ecs_client import ecs_client, secrets_client
from contracts.heap import settle_heap
from contracts.temporal import connect
from db.engine import make_engine, make_sessionmaker
from observability.logs import configure_logging
from observability.tracing import init_tracing, stop_tracing, temporal_plugins, traced_aws_client
from settings import get_settings
from worker.schedules import ensure_reconcile_schedule
from worker.telemetry import heartbeat, metrics_url, worker_runtime
from worker.versioning import build_id, set_current_version
from worker.workers import build_workers

log = logging.getLogger("worker")


async def main() -> None:
    settings = get_settings()
    settings.check_secrets()
    tracing = init_tracing(settings.otel_exporter_otlp_endpoint, "ocpplab-worker")
    client = await connect(settings, runtime=worker_runtime(settings), plugins=temporal_plugins())
    engine = make_engine(settings)
    await ensure_reconcile_schedule(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with ecs_client(settings) as ecs, secrets_client(settings) as sm:
            traced_ecs = traced_aws_client(ecs, "ECS")  # itself when tracing is off
            workers = build_workers(
                client,
                settings,
                make_sessionmaker(engine),
                traced_ecs,
                traced_aws_client(sm, "SecretsManager"),
            )
            settle_heap(settings.gc_gen0_threshold)
            runs = [asyncio.create_task(w.run()) for w in workers]
            beat = asyncio.create_task(heartbeat(settings, runs))
            log.info(
                "worker polling %s, %s and %s (metrics: %s, tracing: %s, version: %s)",
                settings.task_queue,
                settings.ecs_task_queue,
                settings.ocpi_push_task_queue,
                metrics_url(settings) or "off",
                "on" if tracing else "off",
                f"{settings.worker_deployment_name}/{build_id(settings)}"
                if settings.worker_versioning
                else "unversioned",
            )
            if settings.worker_versioning and settings.worker_set_current_version:
                await set_current_version(client, settings.worker_deployment_name, build_id(settings))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([stopped, *runs], return_when=asyncio.FIRST_COMPLETED)
            log.info("shutting down: in-flight activities get %ss", settings.worker_shutdown_grace_seconds)
            beat.cancel()
            await asyncio.gather(*(w.shutdown() for w in workers))
            for run in runs:  # a worker that stopped on its own: say why
                error = run.exception() if run.done() else None
                if error is not None:
                    raise error
    finally:
        await engine.dispose()
        stop_tracing()


if __name__ == "__main__":
    configure_logging(get_settings().log_format, get_settings().log_level)
    asyncio.run(main())
