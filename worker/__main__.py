"""`python -m worker`: run the workers until SIGINT/SIGTERM, then shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal

from activities.ecs_client import ecs_client
from contracts.temporal import connect
from db.engine import make_engine, make_sessionmaker
from settings import get_settings
from worker.workers import build_workers

log = logging.getLogger("worker")


async def main() -> None:
    settings = get_settings()
    settings.check_secrets()
    client = await connect(settings)
    engine = make_engine(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with ecs_client(settings) as ecs:
            workers = build_workers(client, settings, make_sessionmaker(engine), ecs)
            runs = [asyncio.create_task(w.run()) for w in workers]
            log.info("worker polling %s and %s", settings.task_queue, settings.ecs_task_queue)
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([stopped, *runs], return_when=asyncio.FIRST_COMPLETED)
            log.info("shutting down: in-flight activities get %ss", settings.worker_shutdown_grace_seconds)
            await asyncio.gather(*(w.shutdown() for w in workers))
            for run in runs:  # a worker that stopped on its own: say why
                error = run.exception() if run.done() else None
                if error is not None:
                    raise error
    finally:
        await engine.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main())
