"""The bench's state and the steps every scenario uses: a CPO, a POST, a job polled to its end,
the CPU of every process meanwhile, an idle stack and an empty ECS before each scenario."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import string
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from temporalio.client import Client

from bench import server_side
from bench.client import MAX_CONSECUTIVE_ERRORS, PostRefused, error_kind, loop_lag
from bench.procstats import CpuSnapshot, CpuUsage
from bench.report import Report, say
from bench.runner import stack_settings
from bench.workload import body
from contracts.temporal import connect
from devstack.stack import Stack
from worker.histories import JobHistories

T = TypeVar("T")


class Bench:
    """One invocation: the stack, the client, the report; each scenario is a function of it
    (bench/scenarios/)."""

    def __init__(self, args: argparse.Namespace, stack: Stack, env: dict[str, str]) -> None:
        self.args = args
        self.stack = stack
        self.env = env
        self.report = Report()
        # the baseline's own pool: 100 in flight, 40 connections at most
        self.settings = stack_settings(env, db_pool_size=20)
        self.admin = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
        self.parties = ("".join(p) for p in itertools.product(string.ascii_uppercase, repeat=3))
        self.http: httpx.AsyncClient
        self.temporal: Client
        self.baseline_rate: dict[int, float] = {}  # chargers per location → locations/s
        self.scenario = ""  # the one running: client errors are counted against it
        self.seconds: dict[str, float] = {}  # floor / peer / baseline / product: time of the run
        self.client_lag: list[float] = []  # the bench's own event-loop lag while it polls

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=self.env["API_URL"], timeout=120, limits=limits) as http:
            self.http = http
            self.temporal = await connect(self.settings)
            for name in self.args.scenarios:
                self.scenario = name
                self.report.errors[name] = Counter()
                try:
                    await SCENARIOS[name](self)
                except Exception as err:  # recorded; the next scenarios still run
                    self.error(err)
                    self.report.notes.append(f"{name}: aborted by {type(err).__name__}: {err}"[:500])
                    say(f"{name}: aborted by {type(err).__name__}: {err}")
            self.compare()

    def compare(self) -> None:
        """The product (and the direct baseline) against the floor and the peer, same run."""
        t = self.seconds
        size = f"{self.args.locations} x {self.args.chargers}"
        if "product" in t and "floor" in t:
            ratio = t["floor"] / t["product"]
            self.report.add(
                f"product {size} against the floor (floor time / product time)",
                f"ours at {ratio:.2f}x the floor ({t['product']:.1f} s vs {t['floor']:.1f} s)",
                target=">= 0.5x",
                met=ratio >= 0.5,
            )
        if "product" in t and "peer" in t:
            ratio = t["peer"] / t["product"]
            self.report.add(
                f"product {size} against the peer (peer time / product time)",
                f"{ratio:.2f}x the peer's throughput ({t['product']:.1f} s vs {t['peer']:.1f} s)",
                target=">= 1.5x",
                met=ratio >= 1.5,
            )
        if "baseline" in t and "floor" in t:
            ratio = t["baseline"] / t["floor"]
            self.report.add(
                f"direct baseline {size}: the activity code's time / the floor's",
                f"{ratio:.2f}x ({t['baseline']:.1f} s vs {t['floor']:.1f} s)",
                target="<= 1.2x",
                met=ratio <= 1.2,
            )
        if "peer" in t and "floor" in t:
            self.report.add(
                f"peer {size} against the floor (floor time / peer time)", f"{t['floor'] / t['peer']:.2f}x"
            )

    def error(self, err: BaseException | str) -> None:
        """Count a client error against the running scenario."""
        kind = err if isinstance(err, str) else error_kind(err)
        self.report.errors.setdefault(self.scenario, Counter())[kind] += 1

    # -- helpers ----------------------------------------------------------------------------

    async def cpo(self) -> tuple[str, dict[str, str]]:
        party = next(self.parties)
        cpo = {"name": f"bench {party}", "country_code": "BE", "party_id": party}
        response = await self.http.post("/ocpi/cpos", headers=self.admin, json=cpo)
        response.raise_for_status()
        data = response.json()
        return str(data["cpo_id"]), {
            "Authorization": f"Bearer {data['token']}",
            "Content-Type": "application/json",
        }

    async def post(self, cpo_id: str, token: dict[str, str], content: bytes) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        response = await self.http.post(f"/ocpi/cpos/{cpo_id}/locations", headers=token, content=content)
        elapsed = time.perf_counter() - started
        if response.status_code != 202:
            raise PostRefused(response.status_code, response.text)
        return dict(response.json()), elapsed

    async def prepare(self, label: str) -> None:
        """An idle stack and an empty ECS before each scenario."""
        await self.drain(label)
        await asyncio.to_thread(self.stack.reset_ecs)

    async def drain(self, label: str, timeout: float = 1800) -> None:
        started = time.monotonic()
        while True:
            running = (await self.temporal.count_workflows('ExecutionStatus="Running"')).count
            if running == 0:
                break
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{running} workflows still running after {timeout:.0f}s")
            await asyncio.sleep(1)
        waited = time.monotonic() - started
        if waited > 1:
            say(f"{label}: waited {waited:.0f}s for the stack to drain")

    async def measured(
        self,
        label: str,
        work: Callable[[], Awaitable[T]],
        extra: dict[str, int] | None = None,
        locations: int = 0,
    ) -> T:
        """Run `work`, recording the CPU seconds of every process of the stack meanwhile (and of
        `extra` processes: a floor's or a peer's). `locations`: per-location CPU is printed."""
        pids = {**self.stack.pids(), "bench": os.getpid(), **(extra or {})}
        before = CpuSnapshot.take(pids)
        started = time.perf_counter()
        result = await work()
        wall = time.perf_counter() - started
        usage = CpuUsage.between(before, CpuSnapshot.take(pids))
        self.report.cpu.append((label, wall, usage, locations))
        return result

    async def poll_until_done(
        self,
        status_url: str,
        token: dict[str, str],
        pollers: int,
        interval: float,
        latencies: list[float],
    ) -> dict[str, Any]:
        """`pollers` clients poll the job, staggered; returns the first terminal status seen."""
        done = asyncio.Event()
        final: dict[str, Any] = {}

        async def poller(number: int) -> None:
            await asyncio.sleep(interval * number / pollers)
            failed = 0  # in a row
            while not done.is_set():
                started = time.perf_counter()
                try:
                    response = await self.http.get(status_url, headers=token)
                    if response.status_code != 200:
                        self.error(f"status GET answered {response.status_code}")
                    status = response.json() if response.status_code == 200 else {}
                    failed = 0
                except (httpx.HTTPError, ValueError) as err:  # transport error, or a body not JSON
                    self.error(err)
                    failed += 1
                    if failed >= MAX_CONSECUTIVE_ERRORS:
                        say(f"a poller gave up after {failed} errors in a row ({error_kind(err)})")
                        return
                    await asyncio.sleep(interval)
                    continue
                latencies.append(time.perf_counter() - started)
                if status.get("status", "PROVISIONING") not in ("PENDING", "PROVISIONING"):
                    final.update(status)
                    done.set()
                    return
                await asyncio.sleep(interval)

        probe = asyncio.create_task(loop_lag(done, self.client_lag))
        await asyncio.gather(*(poller(i) for i in range(pollers)))
        done.set()  # every poller gave up: the probe stops too
        await probe
        return final

    async def run_job(
        self, n: int, chargers: int, pollers: int, interval: float, tag: str
    ) -> tuple[float, float, list[float], dict[str, Any], str]:
        """(seconds to READY from the POST, 202 seconds, poll latencies, final status, job id)."""
        cpo_id, token = await self.cpo()
        content = json.dumps(body(n, chargers, f"{tag}{cpo_id}")).encode()
        started = time.perf_counter()
        accepted, answered = await self.post(cpo_id, token, content)
        latencies: list[float] = []
        final = await self.poll_until_done(accepted["status_url"], token, pollers, interval, latencies)
        elapsed = time.perf_counter() - started
        if final.get("status") != "READY":
            self.report.notes.append(
                f"{tag}: job {accepted['job_id']} ended {final.get('status')}: {final.get('error')}"
            )
        return elapsed, answered, latencies, final, accepted["job_id"]

    async def server_side_rows(
        self, before: server_side.Buckets, what: str, route: str, method: str, starts: bool = False
    ) -> None:
        """The same requests as the API timed them (for a POST, also its Temporal start): what
        the client saw beyond that is the client's own wait for a core and the connection."""
        after = await server_side.scrape(self.http)
        rows = [(what, server_side.REQUESTS, route, method)]
        if starts:
            rows.append((f"{what}: its workflow start in Temporal", server_side.WORKFLOW_START, "", ""))
        for label, metric, r, m in rows:
            p50, count = server_side.quantile(before, after, 50, metric, r, m)
            p99, _ = server_side.quantile(before, after, 99, metric, r, m)
            self.report.add(
                f"{label}, as the API timed it ({count})",
                f"p50 {server_side.bound(p50)}, p99 {server_side.bound(p99)}",
            )

    def history_rows(self, label: str, h: JobHistories) -> None:
        per = h.per_location()
        self.report.add(
            f"{label}: per location (child + parent share)",
            f"{per.events} events, {per.workflow_tasks} workflow tasks, {per.activity_tasks} activity tasks",
        )
        self.report.add(
            f"{label}: one ProvisionLocation (mean of {h.sampled})",
            f"{h.child.events} events, {h.child.workflow_tasks} workflow tasks, "
            f"{h.child.activity_tasks} activity tasks ({h.child.timed_out} workflow tasks timed out "
            "in the sample)",
        )
        self.report.add(
            f"{label}: parent runs / their events",
            f"{h.parent_runs} runs, {h.parent.events} events "
            f"({h.parent.workflow_tasks} workflow tasks, {h.parent.activity_tasks} activity tasks, "
            f"{h.parent.timed_out} workflow tasks timed out)",
        )

    async def cancel(self, job_id: str) -> None:
        await self.temporal.get_workflow_handle(job_id).cancel()


from bench.scenarios import SCENARIOS  # noqa: E402  (the scenarios use Bench)
