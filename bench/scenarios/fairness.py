"""Fairness: another CPO's small job beside a big CPO's jobs, each setting on a stack of its own."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench.client import poll
from bench.report import say
from bench.workload import body
from devstack.stack import Ports, Stack

if TYPE_CHECKING:
    from bench.core import Bench


async def run(b: Bench) -> None:
    a = b.args
    for rate in (None, 20):
        for fair in (False, True):
            label = f"fairness {'on' if fair else 'off'}, ECS {f'{rate}/s' if rate else 'unlimited'}"
            seconds, note = await small_job_beside_a_big_cpo(a, fair, rate, label, b.error)
            b.report.add(
                f"{label}: another CPO's 1 x 2 job beside {a.fair_jobs} jobs of {a.fair_locations} x 2",
                f"READY in {seconds:.1f} s ({note})",
                target="<= 5 s" if fair else "",
                met=(seconds <= 5) if fair else None,
            )


async def small_job_beside_a_big_cpo(
    args: argparse.Namespace,
    fairness: bool,
    ecs_rate: int | None,
    label: str,
    on_error: Callable[[BaseException], None],
) -> tuple[float, str]:
    """The fairness scenario on a stack of its own (the dev server's fairness is set at its
    start, the ECS rate limit at the workers'): seconds from the POST of the small job to its
    READY, and how far the big CPO's jobs had got by then."""
    with tempfile.TemporaryDirectory(prefix="ocpplab-bench-fair-") as folder:
        stack = Stack(
            Path(folder),
            Ports.free(),
            workers=args.workers,
            use_environment=False,
            say=lambda m: say(f"{label}: {m}"),
            fairness=fairness,
        )
        try:
            env = await asyncio.to_thread(stack.start_services)
            if ecs_rate:
                env["ECS_ACTIVITIES_PER_SECOND"] = str(ecs_rate)
            stack.write_env(env)
            await asyncio.to_thread(stack.start_app, env)
            admin = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
            async with httpx.AsyncClient(base_url=env["API_URL"], timeout=120) as http:

                async def cpo(party: str) -> tuple[str, dict[str, str]]:
                    response = await http.post(
                        "/ocpi/cpos",
                        headers=admin,
                        json={"name": f"bench {party}", "country_code": "BE", "party_id": party},
                    )
                    response.raise_for_status()
                    return str(response.json()["cpo_id"]), {
                        "Authorization": f"Bearer {response.json()['token']}"
                    }

                async def post(cpo_id: str, token: dict[str, str], n: int, tag: str) -> dict[str, Any]:
                    response = await http.post(
                        f"/ocpi/cpos/{cpo_id}/locations", headers=token, json=body(n, 2, tag)
                    )
                    if response.status_code != 202:
                        raise RuntimeError(f"POST answered {response.status_code}: {response.text[:300]}")
                    return dict(response.json())

                big_cpo, big_token = await cpo("BIG")
                small_cpo, small_token = await cpo("SML")
                big_jobs = await asyncio.gather(
                    *(
                        post(big_cpo, big_token, args.fair_locations, f"FAIR{j}")
                        for j in range(args.fair_jobs)
                    )
                )
                # let the big CPO's jobs fill the queues before the small job arrives
                await asyncio.sleep(args.fair_warmup)
                started = time.perf_counter()
                accepted = await post(small_cpo, small_token, 1, "SMALL")
                final = await poll(http, accepted["status_url"], small_token, on_error)
                seconds = time.perf_counter() - started
                done = 0
                for job in big_jobs:
                    progress = (await http.get(job["status_url"], headers=big_token)).json()["progress"]
                    done += progress["succeeded"] + progress["failed"]
                total = args.fair_jobs * args.fair_locations
                note = f"{final.get('status')}; the big CPO had {done} of {total} locations done by then"
                say(f"{label}: {seconds:.1f} s, {note}")
                return seconds, note
        finally:
            await asyncio.to_thread(stack.stop)
