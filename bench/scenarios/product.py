"""The product: one job through the API, Temporal and the workers, polled by many clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench import server_side
from bench.client import STATUS_ROUTE
from bench.report import ms, say
from bench.workload import pct
from worker.histories import job_histories

if TYPE_CHECKING:
    from bench.core import Bench


async def run(b: Bench) -> None:
    a = b.args
    n, chargers = a.locations, a.chargers
    await b.prepare("product")
    say(f"product: {n} x {chargers} through the API, {a.pollers} pollers every {a.poll_interval}s")
    scraped = await server_side.scrape(b.http)
    b.client_lag.clear()
    elapsed, answered, latencies, _, job_id = await b.measured(
        f"product {n}x{chargers}",
        lambda: b.run_job(n, chargers, a.pollers, a.poll_interval, "PROD"),
        locations=n,
    )
    b.seconds["product"] = elapsed
    rate = n / elapsed
    base = b.baseline_rate.get(chargers)
    b.report.add(
        f"product {n} x {chargers} (+{a.pollers} pollers): time / throughput",
        f"{elapsed:.1f} s, {rate:.1f} loc/s" + (f" = {rate / base:.2f}x baseline" if base else ""),
        target=">= 0.5x baseline",
        baseline=f"{base:.1f} loc/s" if base else "not run",
        met=(rate >= 0.5 * base) if base else None,
    )
    b.report.add(f"product {n} x {chargers}: 202 of the POST", ms(answered))
    b.report.add(
        f"status GET, {a.pollers} clients polling a running job ({len(latencies)} polls)",
        f"p50 {ms(pct(latencies, 50))}, p99 {ms(pct(latencies, 99))}",
        target="p99 <= 20 ms",
        met=pct(latencies, 99) <= 0.020,
    )
    await b.server_side_rows(scraped, "status GET", STATUS_ROUTE, "GET")
    b.report.add(
        "the polling client's own event-loop lag meanwhile (a 10 ms sleep's overshoot)",
        f"p50 {ms(pct(b.client_lag, 50))}, p99 {ms(pct(b.client_lag, 99))}",
    )
    histories = await job_histories(b.temporal, job_id, a.history_sample)
    b.history_rows(f"product {n} x {chargers}", histories)
