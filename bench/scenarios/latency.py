"""The 202: big bodies on an idle stack, then many small posts and the big bodies again while
jobs run."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import httpx

from bench import server_side
from bench.client import BULK_ROUTE, PostRefused
from bench.report import ms, say
from bench.workload import body, pct

if TYPE_CHECKING:
    from bench.core import Bench


async def big_bodies(b: Bench, jobs: list[str], when: str, idle: bool = False) -> None:
    """The 202 of one 1,000- and one 10,000-location body (1 charger each). `idle`: three of
    each, every job cancelled as soon as it is accepted and the stack drained before the
    next; the median is the figure (the first POST of a fresh stack is a cold one)."""
    targets = {1_000: 0.100, 10_000: 0.500} if idle else {1_000: None, 10_000: 1.0}
    for size, target in targets.items():
        times: list[float] = []
        for _ in range(5 if idle else 1):
            big_cpo, big_token = await b.cpo()
            content = json.dumps(body(size, 1, f"LATB{big_cpo}")).encode()
            accepted, seconds = await b.post(big_cpo, big_token, content)
            times.append(seconds)
            if idle:
                await b.cancel(accepted["job_id"])
                await b.drain(f"latency: a {size:,}-location job on an idle stack")
            else:
                jobs.append(accepted["job_id"])
        figure = sorted(times)[len(times) // 2]
        value = (
            ms(figure) if len(times) == 1 else (f"{ms(figure)} (median of {', '.join(ms(t) for t in times)})")
        )
        b.report.add(
            f"202 of one {size:,}-location body (1 charger each, {len(content) / 1e6:.1f} MB), {when}",
            value,
            target=f"<= {ms(target)}" if target else "",
            met=figure <= target if target else None,
        )


async def run(b: Bench) -> None:
    a = b.args
    await b.prepare("latency")
    jobs: list[str] = []
    await big_bodies(b, jobs, "on an idle stack", idle=True)  # then again under load

    async def work() -> None:
        scraped = await server_side.scrape(b.http)
        cpo_id, token = await b.cpo()
        background = json.dumps(body(a.load_locations, a.chargers, f"LATBG{cpo_id}")).encode()
        accepted, _ = await b.post(cpo_id, token, background)
        jobs.append(accepted["job_id"])
        await asyncio.sleep(2)  # let it get going
        latencies: list[float] = []
        queue = iter(range(a.posts))

        async def client() -> None:
            # each client is a CPO of its own (one CPO would soon hit its running-jobs quota)
            client_cpo, client_token = await b.cpo()
            for number in queue:
                # the posted bodies provision too (1 charger each, identities of their own),
                # adding to the load they are timed in
                content = json.dumps(body(a.post_size, 1, f"LAT{client_cpo}P{number}")).encode()
                try:
                    accepted, seconds = await b.post(client_cpo, client_token, content)
                except (httpx.HTTPError, PostRefused) as err:  # counted, the client goes on
                    b.error(err)
                    continue
                latencies.append(seconds)
                jobs.append(accepted["job_id"])

        await asyncio.gather(*(client() for _ in range(a.pollers)))
        b.report.add(
            f"202, {a.pollers} clients posting {a.post_size}-location bodies while "
            f"{a.load_locations:,} x {a.chargers} provision ({len(latencies)} posts)",
            f"p50 {ms(pct(latencies, 50))}, p99 {ms(pct(latencies, 99))}",
            target="p99 <= 1 s",
            met=pct(latencies, 99) <= 1.0,
        )
        await b.server_side_rows(scraped, "202", BULK_ROUTE, "POST", starts=True)
        await big_bodies(b, jobs, "while those jobs run")

    await b.measured("latency", work)
    say(f"latency: cancelling the {len(jobs)} jobs it started")
    await asyncio.gather(*(b.cancel(job_id) for job_id in jobs), return_exceptions=True)
    await b.drain("latency")
