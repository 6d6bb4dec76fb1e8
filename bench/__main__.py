"""Throughput of the bulk-create, against a baseline with no orchestration, in one process.

Both runs use the same embedded PostgreSQL, the same moto server and the same activity code:
- baseline: the job's rows are written by the API code, then every location is provisioned by
  calling the activities directly from one asyncio loop (100 at a time), no Temporal at all;
- product: POST through the real app → Temporal dev server (real time) → the real workers →
  READY, polled through the status endpoint as a client would.

    make bench BENCH_ARGS="--locations 1000 --chargers 2"
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from alembic.config import Config
from temporalio.testing import ActivityEnvironment

from activities.ecs_client import ecs_client
from activities.ecs_tasks import EcsTaskActivities
from activities.location_rows import LocationRowsActivities
from api.app import create_app
from api.bulk_jobs import create_or_reuse_job, job_tuning
from api.schemas import BulkCreateRequest
from contracts.payloads import ActivateInput, ChargerTaskInput, ProvisionInput
from contracts.temporal import connect
from db.engine import make_engine, make_sessionmaker
from db.models import PartnerOperation
from devstack.moto_ecs import MotoServer, bootstrap_ecs
from devstack.postgres import EmbeddedPostgres
from devstack.procs import free_port
from devstack.temporal import TemporalDevServer
from settings import ROOT, Settings
from worker.workers import build_workers

ADMIN = "bench-admin-token-0123456789"


def body(n: int, chargers: int, tag: str) -> dict[str, Any]:
    return {"locations": [
        {"name": f"Bench {tag} {i}", "address": "Rue de la Loi 16", "city": "Brussels", "country": "BE",
         "coordinates": {"latitude": 50.8 + i / 1e5, "longitude": 4.3 + i / 1e5}, "public": True,
         "timezone": "Europe/Brussels",
         "chargers": [{"identity": f"{tag}-{i}-{c}", "connector_type": "Type2", "max_power_kw": 22}
                      for c in range(chargers)]}
        for i in range(n)
    ]}


async def baseline(settings: Settings, cpo_id: int, n: int, chargers: int) -> float:
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    request = BulkCreateRequest.model_validate(body(n, chargers, "BASE"))
    async with sessions() as session:
        job, _ = await create_or_reuse_job(session, cpo_id, request, None)
    rows = LocationRowsActivities(sessions, settings)
    env = ActivityEnvironment()
    gate = asyncio.Semaphore(100)
    async with ecs_client(settings) as ecs:
        tasks = EcsTaskActivities(sessions, ecs, settings)

        async def one(index: int) -> None:
            async with gate:
                plan = await env.run(rows.write_location_rows, ProvisionInput(
                    job_id=job.id, cpo_id=cpo_id, index=index, tuning=job_tuning(settings)))
                for c in plan.chargers:
                    await env.run(tasks.start_charger_task, ChargerTaskInput(
                        job.id, index, plan.location_id, c.deployment_id, c.identity))
                await env.run(rows.activate_location, ActivateInput(
                    job.id, index, plan.location_id, [c.deployment_id for c in plan.chargers]))

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
    await engine.dispose()
    return elapsed


async def product(settings: Settings, n: int, chargers: int) -> tuple[float, float]:
    client = await connect(settings)
    engine = make_engine(settings)
    app = create_app(settings)
    async with ecs_client(settings) as ecs, app.router.lifespan_context(app):
        workers = build_workers(client, settings, make_sessionmaker(engine), ecs)
        runs = [asyncio.create_task(w.run()) for w in workers]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as http:
            admin = {"Authorization": f"Bearer {ADMIN}"}
            cpo = (await http.post("/ocpi/cpos", headers=admin,
                                   json={"name": "bench", "country_code": "BE", "party_id": "PRD"})).json()
            token = {"Authorization": f"Bearer {cpo['token']}"}
            started = time.perf_counter()
            accepted = await http.post(f"/ocpi/cpos/{cpo['cpo_id']}/locations", headers=token,
                                       json=body(n, chargers, "PROD"))
            answered = time.perf_counter() - started
            assert accepted.status_code == 202, accepted.text
            while True:
                status = (await http.get(accepted.json()["status_url"], headers=token)).json()
                if status["status"] != "PROVISIONING":
                    break
                await asyncio.sleep(0.5)
            elapsed = time.perf_counter() - started
            assert status["status"] == "READY", status["error"]
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*runs, return_exceptions=True)
    await engine.dispose()
    return answered, elapsed


async def main(n: int, chargers: int, window: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ocpplab-bench-") as folder:
        root = Path(folder)
        pg = EmbeddedPostgres(root / "pg", free_port(), durable=False)
        moto = MotoServer(free_port(), root / "moto.log")
        temporal = TemporalDevServer(free_port(), None, None, log_file=root / "temporal.log")
        try:
            pg.start()
            pg.create_database("ocpplab")
            cfg = Config(str(ROOT / "alembic.ini"))
            cfg.attributes["database_url"] = pg.url("ocpplab")
            command.upgrade(cfg, "head")
            moto.start()
            temporal.start()
            boot = bootstrap_ecs(moto.url, "eu-west-1", "bench", "ocpplab-charger", "charger", "sim")
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                admin_token=ADMIN, database_url=pg.url("ocpplab"), temporal_address=temporal.address,
                aws_endpoint_url=moto.url, aws_region="eu-west-1", aws_access_key_id="testing",
                aws_secret_access_key="testing", ecs_cluster="bench", ecs_subnets=boot.subnet_ids,
                ecs_security_groups=boot.security_group_ids, child_window=window, db_pool_size=20,
            )
            engine = make_engine(settings)
            async with make_sessionmaker(engine)() as session:
                baseline_cpo = PartnerOperation(name="baseline", country_code="BE", party_id="BSL")
                session.add(baseline_cpo)
                await session.commit()
                assert baseline_cpo.id is not None
                cpo_id = baseline_cpo.id
            await engine.dispose()
            print(f"bulk-create of {n} locations x {chargers} chargers (window {window}), 2 cores")
            base = await baseline(settings, int(cpo_id), n, chargers)
            print(f"  baseline (activities from one asyncio loop, no Temporal): {base:7.2f} s"
                  f"  {n / base:7.1f} locations/s")
            answered, prod = await product(settings, n, chargers)
            print(f"  product  (API → Temporal → workers → READY):              {prod:7.2f} s"
                  f"  {n / prod:7.1f} locations/s   (202 after {answered * 1000:.0f} ms)")
            print(f"  product / baseline time: {prod / base:.2f}x")
        finally:
            temporal.stop()
            moto.stop()
            pg.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--locations", type=int, default=300)
    parser.add_argument("--chargers", type=int, default=2)
    parser.add_argument("--window", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.locations, args.chargers, args.window))
