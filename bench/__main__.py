"""Throughput and latency of the bulk-create on the `make run` stack, next to a direct baseline.

It starts exactly the stack of `make run` (devstack.stack.Stack: embedded PostgreSQL, the
Temporal dev server with its tuned options, moto, `WORKERS` x `python -m worker`, the API as
`uvicorn api.app:app`, all as subprocesses) in a temporary folder on free ports, so it never
clashes with a `make run` that is up, then runs the scenarios and prints one table: each figure,
its target, the direct baseline measured in the same run, and met / not met. Nothing fails on a
number; the targets are printed, never asserted.

Scenarios (`--scenarios`, comma-separated; default all):
- floor     the product's work per location with nothing around it (bench/floor.py): the same
            rows of the 10 tables, one Secrets Manager secret and one RunTask per charger, from
            one asyncio script with raw SQL (psycopg, no SQLAlchemy, no engine),
            `--floor-concurrency` (32) locations in flight; same PostgreSQL and moto, its own
            process. `--locations` x `--chargers`.
- peer      the same steps as DBOS Transact workflows (bench/peer.py), one per location, every
            step checkpointed in PostgreSQL (its system database in the same embedded
            PostgreSQL), `--floor-concurrency` in flight; its own process.
- baseline  the same activity code (write_location_rows, start_charger_task, activate_location)
            called straight from one asyncio loop, `--baseline-concurrency` locations in flight,
            no Temporal; same PostgreSQL and moto. `--locations` x `--chargers`.
- product   POST over HTTP to the API → Temporal → workers → READY, `--locations` x `--chargers`,
            while `--pollers` clients poll its status every `--poll-interval` s (every poll's
            latency is recorded); time to READY; history events / workflow tasks / activity
            tasks per location.
- latency   one 1,000-location and one 10,000-location body (1 charger each) on an idle stack;
            then while a `--locations` x 1 job runs: `--pollers` clients post `--posts` bodies
            of `--post-size` charger-less locations (202 latency p50/p99), and the two big
            bodies again. Every job it started is cancelled through Temporal, the stack drained.
  Latencies are the client's (the bench's own process, on the same cores); beside them, the
  same requests as the API timed them (its Prometheus histograms: a bucket's upper bound) and,
  for a POST, the part spent starting the workflow in Temporal.
- big       a `--locations` x 1 job (the reference), then a `--big` x 1 job: time to READY, time
            per location against the reference, peak RSS of every worker process (VmHWM and
            VmRSS sampled from /proc), the largest history over all workflows of the job.
- fairness  one CPO runs `--fair-jobs` jobs of `--fair-locations` x 2 chargers; once they are
            under way another CPO posts a 1-location job (2 chargers): its time to READY, on
            stacks of their own (fresh each time) with the dev server's fairness off and on, and
            both again with the ECS rate limit of real Fargate (ECS_ACTIVITIES_PER_SECOND=20).

moto keeps every task it ever started and its ListTasks/DescribeTasks scan all of them (all
clusters), so before every scenario moto is reset and bootstrapped again (same subnet and
security group ids): every run starts from an empty ECS, baseline and product alike. Between
scenarios the stack is drained (no workflow running). For each scenario the CPU seconds of every
process (with its children: PostgreSQL's backends) and the machine's busy/iowait time are
printed: that is where the bottleneck shows.

    make bench                                        # full size: 1,000 x 2, 10,000 x 1
    make bench BENCH_ARGS="--locations 300 --chargers 1 --big 2000"     # a quick look
    make bench BENCH_ARGS="--scenarios baseline,product"
    make bench BENCH_ARGS="--scenarios floor,peer,product --locations 200"   # the ratios, quickly

After the scenarios: the product's time against the floor's (floor time / product time: "ours at
X x the floor") and the peer's (peer time / product time), from the same invocation, and the CPU
of every process per location of each scenario that provisioned locations.
    WORKERS=1 make bench                              # as `WORKERS=1 make run`
    CHILD_WINDOW=200 make bench                       # any setting reaches the stack's processes
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import string
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.ecs_client import ecs_client, secrets_client
from activities.ecs_tasks import EcsTaskActivities
from activities.location_rows import LocationRowsActivities
from api.bulk_jobs import create_or_reuse_job
from api.schemas import BulkCreateRequest
from bench import server_side
from bench.histories import JobHistories, job_histories
from bench.procstats import CpuSnapshot, CpuUsage, RssSampler
from bench.runner import ScenarioProcess, stack_settings
from bench.workload import body, pct
from contracts.job_start import job_tuning
from contracts.payloads import ActivateInput, ChargerTaskInput, ProvisionInput
from contracts.temporal import connect
from db.engine import make_engine, make_sessionmaker
from devstack.stack import Ports, Stack, workers_from_env
from settings import Settings

SCENARIOS = ("floor", "peer", "baseline", "product", "latency", "big", "fairness")
T = TypeVar("T")


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# A client error (the API unreachable, a connection reset while polling, a 5xx) is counted
# against the scenario and the client goes on; a poller gives up after this many in a row.
MAX_CONSECUTIVE_ERRORS = 50


def error_kind(err: BaseException) -> str:
    """How an error is counted: its type, e.g. `ReadError`, `ConnectError`, `HTTP 503`."""
    if isinstance(err, httpx.HTTPStatusError):
        return f"HTTP {err.response.status_code}"
    if isinstance(err, PostRefused):
        return f"POST answered {err.status}"
    return type(err).__name__


# ---------------------------------------------------------------------------------------------
# bodies and the baseline


async def baseline(settings: Settings, cpo_id: int, n: int, chargers: int, concurrency: int) -> float:
    """The direct baseline: the job's rows written by the API's code, then every location
    provisioned by calling the same activities from one asyncio loop, no Temporal at all.
    Seconds from the first location started to the last one active."""
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    request = BulkCreateRequest.model_validate(body(n, chargers, f"BASE{cpo_id}"))
    async with sessions() as session:
        job, _ = await create_or_reuse_job(session, cpo_id, request, None)
    rows = LocationRowsActivities(sessions, settings)
    env = ActivityEnvironment()
    gate = asyncio.Semaphore(concurrency)
    async with ecs_client(settings) as ecs, secrets_client(settings) as sm:
        tasks = EcsTaskActivities(sessions, ecs, settings, sm)

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


# ---------------------------------------------------------------------------------------------
# measuring


async def loop_lag(done: asyncio.Event, lags: list[float], every: float = 0.010) -> None:
    """How late this process's event loop wakes up: on one small box the client waits for a
    core too, and that wait is in every latency it measures."""
    while not done.is_set():
        started = time.perf_counter()
        await asyncio.sleep(every)
        lags.append(max(0.0, time.perf_counter() - started - every))


STATUS_ROUTE = "/ocpi/cpos/{cpo_id}/locations/jobs/{job_id}"
BULK_ROUTE = "/ocpi/cpos/{cpo_id}/locations"


class PostRefused(RuntimeError):
    """A POST that did not answer 202."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"POST answered {status}: {text[:500]}")
        self.status = status


@dataclass
class Row:
    what: str
    value: str
    target: str = ""
    baseline: str = ""
    met: bool | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    # (scenario label, wall seconds, CPU, locations provisioned: 0 where it is not the point)
    cpu: list[tuple[str, float, CpuUsage, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: dict[str, Counter[str]] = field(default_factory=dict)  # scenario → error kind → count

    def add(self, what: str, value: str, target: str = "", baseline: str = "",
            met: bool | None = None) -> None:
        self.rows.append(Row(what, value, target, baseline, met))
        verdict = "" if met is None else ("  [met]" if met else "  [NOT met]")
        say(f"{what}: {value}{'  target ' + target if target else ''}{verdict}")

    def print(self) -> None:
        headers = ("measure", "value", "target", "direct baseline", "")
        table = [(r.what, r.value, r.target, r.baseline,
                  "" if r.met is None else ("met" if r.met else "NOT met")) for r in self.rows]
        widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h)
                  for i, h in enumerate(headers)]
        line = "  ".join("-" * w for w in widths)
        print("\n" + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        print(line)
        for row in table:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if self.cpu:
            names = sorted({n for _, _, usage, _ in self.cpu for n in usage.procs}, key=_proc_order)
            print("\nCPU seconds per scenario (process and its children; box = whole machine, 2 cores"
                  " shared with others):")
            head = ["scenario", "wall s", *names, "box busy", "box iowait"]
            cells = [[label, f"{wall:.1f}", *(f"{usage.procs.get(n, 0.0):.1f}" for n in names),
                      f"{usage.box_busy:.1f}", f"{usage.box_iowait:.1f}"]
                     for label, wall, usage, _ in self.cpu]
            _table(head, cells)
            per = [(label, usage, n) for label, _, usage, n in self.cpu if n]
            if per:
                print("\nCPU ms per location (same processes; `all` counts every one: the baseline runs"
                      " in the bench's process, for the product the bench is its polling clients):")
                head = ["scenario", *names, "all"]
                cells = [[label, *(f"{usage.procs.get(p, 0.0) * 1000 / n:.1f}" for p in names),
                          f"{sum(usage.procs.values()) * 1000 / n:.1f}"]
                         for label, usage, n in per]
                _table(head, cells)
        if self.errors:
            print("\nclient errors per scenario (counted, never fatal):")
            for scenario, counts in self.errors.items():
                detail = ", ".join(f"{kind} {count}" for kind, count in counts.most_common())
                print(f"  {scenario}: {sum(counts.values())}" + (f" ({detail})" if detail else ""))
        for note in self.notes:
            print(f"- {note}")


def _table(head: list[str], cells: list[list[str]]) -> None:
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


def _proc_order(name: str) -> tuple[int, str]:
    order = ["temporal", "postgres", "moto", "worker", "api", "floor", "peer", "bench"]
    kind = name.split("-")[0]
    return (order.index(kind) if kind in order else len(order), name)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# ---------------------------------------------------------------------------------------------
# the bench


class Bench:
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
                    await getattr(self, name)()
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
            self.report.add(f"product {size} against the floor (floor time / product time)",
                            f"ours at {ratio:.2f}x the floor ({t['product']:.1f} s vs {t['floor']:.1f} s)",
                            target=">= 0.5x", met=ratio >= 0.5)
        if "product" in t and "peer" in t:
            ratio = t["peer"] / t["product"]
            self.report.add(f"product {size} against the peer (peer time / product time)",
                            f"{ratio:.2f}x the peer's throughput ({t['product']:.1f} s vs {t['peer']:.1f} s)",
                            target=">= 1.5x", met=ratio >= 1.5)
        if "baseline" in t and "floor" in t:
            ratio = t["baseline"] / t["floor"]
            self.report.add(f"direct baseline {size}: the activity code's time / the floor's",
                            f"{ratio:.2f}x ({t['baseline']:.1f} s vs {t['floor']:.1f} s)",
                            target="<= 1.2x", met=ratio <= 1.2)
        if "peer" in t and "floor" in t:
            self.report.add(f"peer {size} against the floor (floor time / peer time)",
                            f"{t['floor'] / t['peer']:.2f}x")

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
        return str(data["cpo_id"]), {"Authorization": f"Bearer {data['token']}",
                                     "Content-Type": "application/json"}

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

    async def measured(self, label: str, work: Callable[[], Awaitable[T]],
                       extra: dict[str, int] | None = None, locations: int = 0) -> T:
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
        self, status_url: str, token: dict[str, str], pollers: int, interval: float,
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
            self.report.notes.append(f"{tag}: job {accepted['job_id']} ended {final.get('status')}: "
                                     f"{final.get('error')}")
        return elapsed, answered, latencies, final, accepted["job_id"]

    async def server_side_rows(self, before: server_side.Buckets, what: str, route: str, method: str,
                               starts: bool = False) -> None:
        """The same requests as the API timed them (for a POST, also its Temporal start): what
        the client saw beyond that is the client's own wait for a core and the connection."""
        after = await server_side.scrape(self.http)
        rows = [(what, server_side.REQUESTS, route, method)]
        if starts:
            rows.append((f"{what}: its workflow start in Temporal", server_side.WORKFLOW_START, "", ""))
        for label, metric, r, m in rows:
            p50, count = server_side.quantile(before, after, 50, metric, r, m)
            p99, _ = server_side.quantile(before, after, 99, metric, r, m)
            self.report.add(f"{label}, as the API timed it ({count})",
                            f"p50 {server_side.bound(p50)}, p99 {server_side.bound(p99)}")

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

    # -- scenarios --------------------------------------------------------------------------

    async def floor(self) -> None:
        await self.side_scenario("floor", "bench.floor", "raw SQL + aioboto3, no engine")

    async def peer(self) -> None:
        await self.side_scenario("peer", "bench.peer", "DBOS Transact workflows, steps checkpointed")

    async def side_scenario(self, name: str, module: str, what: str) -> None:
        """The floor or the peer, in a process of its own (bench/runner.py) on the same stack."""
        a = self.args
        n, chargers = a.locations, a.chargers
        await self.prepare(name)
        cpo_id, _ = await self.cpo()
        spec = {"cpo_id": int(cpo_id), "locations": n, "chargers": chargers,
                "tag": f"{name.upper()}{cpo_id}", "concurrency": a.floor_concurrency}
        say(f"{name}: {n} x {chargers}, {a.floor_concurrency} in flight, {what}")
        async with ScenarioProcess(module, self.env, spec) as child:
            result = await self.measured(f"{name} {n}x{chargers}", child.go,
                                         extra={name: child.pid}, locations=n)
        for kind, count in result["errors"].items():  # its own locations that failed
            self.report.errors[name][kind] += count
        seconds = float(result["seconds"])
        self.seconds[name] = seconds
        done = f"{result['active_locations']} active, {result['task_rows']} task rows" + (
            f", {result['checkpoints']} step checkpoints" if "checkpoints" in result else "")
        self.report.add(f"{name} {n} x {chargers} ({what}): time / throughput",
                        f"{seconds:.1f} s, {n / seconds:.1f} loc/s ({done})")
        if result["active_locations"] != n or result["task_rows"] != n * chargers:
            self.report.notes.append(f"{name}: only {done} of {n} locations x {chargers} chargers"
                                     + "".join(f"; first error: {e}" for e in result["first_error"]))

    async def baseline(self) -> None:
        n, chargers = self.args.locations, self.args.chargers
        await self.prepare("baseline")
        cpo_id, _ = await self.cpo()
        say(f"baseline: {n} x {chargers}, {self.args.baseline_concurrency} in flight, no Temporal")
        seconds = await self.measured(
            f"baseline {n}x{chargers}",
            lambda: baseline(self.settings, int(cpo_id), n, chargers, self.args.baseline_concurrency),
            locations=n,
        )
        self.baseline_rate[chargers] = n / seconds
        self.seconds["baseline"] = seconds
        self.report.add(f"direct baseline {n} x {chargers}: time / throughput",
                        f"{seconds:.1f} s, {n / seconds:.1f} loc/s",
                        baseline=f"{n / seconds:.1f} loc/s (fresh ECS)")

    async def product(self) -> None:
        a = self.args
        n, chargers = a.locations, a.chargers
        await self.prepare("product")
        say(f"product: {n} x {chargers} through the API, {a.pollers} pollers every {a.poll_interval}s")
        scraped = await server_side.scrape(self.http)
        self.client_lag.clear()
        elapsed, answered, latencies, _, job_id = await self.measured(
            f"product {n}x{chargers}",
            lambda: self.run_job(n, chargers, a.pollers, a.poll_interval, "PROD"),
            locations=n,
        )
        self.seconds["product"] = elapsed
        rate = n / elapsed
        base = self.baseline_rate.get(chargers)
        self.report.add(
            f"product {n} x {chargers} (+{a.pollers} pollers): time / throughput",
            f"{elapsed:.1f} s, {rate:.1f} loc/s" + (f" = {rate / base:.2f}x baseline" if base else ""),
            target=">= 0.5x baseline", baseline=f"{base:.1f} loc/s" if base else "not run",
            met=(rate >= 0.5 * base) if base else None,
        )
        self.report.add(f"product {n} x {chargers}: 202 of the POST", ms(answered))
        self.report.add(
            f"status GET, {a.pollers} clients polling a running job ({len(latencies)} polls)",
            f"p50 {ms(pct(latencies, 50))}, p99 {ms(pct(latencies, 99))}",
            target="p99 <= 20 ms", met=pct(latencies, 99) <= 0.020,
        )
        await self.server_side_rows(scraped, "status GET", STATUS_ROUTE, "GET")
        self.report.add("the polling client's own event-loop lag meanwhile (a 10 ms sleep's overshoot)",
                        f"p50 {ms(pct(self.client_lag, 50))}, p99 {ms(pct(self.client_lag, 99))}")
        histories = await job_histories(self.temporal, job_id, a.history_sample)
        self.history_rows(f"product {n} x {chargers}", histories)

    async def big_bodies(self, jobs: list[str], when: str, idle: bool = False) -> None:
        """The 202 of one 1,000- and one 10,000-location body (1 charger each). `idle`: three of
        each, every job cancelled as soon as it is accepted and the stack drained before the
        next; the median is the figure (the first POST of a fresh stack is a cold one)."""
        for size, target in ((1_000, 0.100), (10_000, 1.0)):
            times: list[float] = []
            for _ in range(3 if idle else 1):
                big_cpo, big_token = await self.cpo()
                content = json.dumps(body(size, 1, f"LATB{big_cpo}")).encode()
                accepted, seconds = await self.post(big_cpo, big_token, content)
                times.append(seconds)
                if idle:
                    await self.cancel(accepted["job_id"])
                    await self.drain(f"latency: a {size:,}-location job on an idle stack")
                else:
                    jobs.append(accepted["job_id"])
            figure = sorted(times)[len(times) // 2]
            value = ms(figure) if len(times) == 1 else (
                f"{ms(figure)} (median of {', '.join(ms(t) for t in times)})")
            self.report.add(f"202 of one {size:,}-location body (1 charger each, "
                            f"{len(content) / 1e6:.1f} MB), {when}", value,
                            target=f"<= {ms(target)}", met=figure <= target)

    async def latency(self) -> None:
        a = self.args
        await self.prepare("latency")
        jobs: list[str] = []
        await self.big_bodies(jobs, "on an idle stack", idle=True)  # then again under load

        async def work() -> None:
            scraped = await server_side.scrape(self.http)
            cpo_id, token = await self.cpo()
            background = json.dumps(body(a.locations, 1, f"LATBG{cpo_id}")).encode()
            accepted, _ = await self.post(cpo_id, token, background)
            jobs.append(accepted["job_id"])
            await asyncio.sleep(2)  # let it get going
            content = json.dumps(body(a.post_size, 0, "LAT")).encode()
            latencies: list[float] = []
            queue = iter(range(a.posts))

            async def client() -> None:
                # each client is a CPO of its own (one CPO would soon hit its running-jobs quota)
                client_cpo, client_token = await self.cpo()
                for _ in queue:
                    try:
                        accepted, seconds = await self.post(client_cpo, client_token, content)
                    except (httpx.HTTPError, PostRefused) as err:  # counted, the client goes on
                        self.error(err)
                        continue
                    latencies.append(seconds)
                    jobs.append(accepted["job_id"])

            await asyncio.gather(*(client() for _ in range(a.pollers)))
            self.report.add(
                f"202, {a.pollers} clients posting {a.post_size}-location bodies while jobs run "
                f"({len(latencies)} posts)",
                f"p50 {ms(pct(latencies, 50))}, p99 {ms(pct(latencies, 99))}",
                target="p99 <= 50 ms", met=pct(latencies, 99) <= 0.050,
            )
            await self.server_side_rows(scraped, "202", BULK_ROUTE, "POST", starts=True)
            await self.big_bodies(jobs, "while those jobs run")

        await self.measured("latency", work)
        say(f"latency: cancelling the {len(jobs)} jobs it started")
        await asyncio.gather(*(self.cancel(job_id) for job_id in jobs), return_exceptions=True)
        await self.drain("latency")

    async def cancel(self, job_id: str) -> None:
        await self.temporal.get_workflow_handle(job_id).cancel()

    async def big(self) -> None:
        a = self.args
        reference_n, big_n = a.locations, a.big
        await self.prepare("big: reference")
        say(f"big: reference {reference_n} x 1")
        ref_elapsed, *_ = await self.measured(
            f"reference {reference_n}x1", lambda: self.run_job(reference_n, 1, 1, 1.0, "REF"))
        self.report.add(f"reference {reference_n} x 1: time / per location",
                        f"{ref_elapsed:.1f} s, {ms(ref_elapsed / reference_n)} per location")
        await self.prepare("big")
        workers = {name: pid for name, pid in self.stack.pids().items() if name.startswith("worker-")}
        sampler = RssSampler(workers)
        sampler.start()
        say(f"big: {big_n} x 1 in one job")
        big_elapsed, answered, _, _, job_id = await self.measured(
            f"big {big_n}x1", lambda: self.run_job(big_n, 1, 1, 1.0, "BIG"))
        peaks = await sampler.stop()
        ratio = (big_elapsed / big_n) / (ref_elapsed / reference_n)
        self.report.add(f"big {big_n:,} x 1 in one job: time to READY",
                        f"{big_elapsed:.1f} s, {ms(big_elapsed / big_n)} per location "
                        f"(202 in {ms(answered)})")
        self.report.add(f"big: time per location / reference's ({reference_n:,} x 1)", f"{ratio:.2f}x",
                        target="<= 1.5x", met=ratio <= 1.5)
        peak = max(peaks.values(), default=0)
        rss = ", ".join(f"{k} {v / 1024:.0f} MB" for k, v in sorted(peaks.items()))
        self.report.add("big: worker peak RSS", rss,
                        target="<= 300 MB", met=peak / 1024 <= 300)
        h = await job_histories(self.temporal, job_id, a.history_sample)
        self.report.add(f"big: largest history over the job's {h.parent_runs + h.children:,} workflows",
                        f"{h.max_events:,} events (parent runs max {h.parent_max_events:,}, "
                        f"children max {h.child_max_events:,})",
                        target="<= 10,240", met=h.max_events <= 10_240)
        self.history_rows(f"big {big_n:,} x 1", h)

    async def fairness(self) -> None:
        a = self.args
        for rate in (None, 20):
            for fair in (False, True):
                label = (f"fairness {'on' if fair else 'off'}, ECS "
                         f"{f'{rate}/s' if rate else 'unlimited'}")
                seconds, note = await small_job_beside_a_big_cpo(a, fair, rate, label, self.error)
                self.report.add(
                    f"{label}: another CPO's 1 x 2 job beside {a.fair_jobs} jobs of "
                    f"{a.fair_locations} x 2", f"READY in {seconds:.1f} s ({note})",
                    target="<= 5 s" if fair else "", met=(seconds <= 5) if fair else None)


async def small_job_beside_a_big_cpo(
    args: argparse.Namespace, fairness: bool, ecs_rate: int | None, label: str,
    on_error: Callable[[BaseException], None],
) -> tuple[float, str]:
    """The fairness scenario on a stack of its own (the dev server's fairness is set at its
    start, the ECS rate limit at the workers'): seconds from the POST of the small job to its
    READY, and how far the big CPO's jobs had got by then."""
    with tempfile.TemporaryDirectory(prefix="ocpplab-bench-fair-") as folder:
        stack = Stack(Path(folder), Ports.free(), workers=args.workers, use_environment=False,
                      say=lambda m: say(f"{label}: {m}"), fairness=fairness)
        try:
            env = await asyncio.to_thread(stack.start_services)
            if ecs_rate:
                env["ECS_ACTIVITIES_PER_SECOND"] = str(ecs_rate)
            stack.write_env(env)
            await asyncio.to_thread(stack.start_app, env)
            admin = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
            async with httpx.AsyncClient(base_url=env["API_URL"], timeout=120) as http:

                async def cpo(party: str) -> tuple[str, dict[str, str]]:
                    response = await http.post("/ocpi/cpos", headers=admin, json={
                        "name": f"bench {party}", "country_code": "BE", "party_id": party})
                    response.raise_for_status()
                    return str(response.json()["cpo_id"]), {
                        "Authorization": f"Bearer {response.json()['token']}"}

                async def post(cpo_id: str, token: dict[str, str], n: int, tag: str) -> dict[str, Any]:
                    response = await http.post(f"/ocpi/cpos/{cpo_id}/locations", headers=token,
                                               json=body(n, 2, tag))
                    if response.status_code != 202:
                        raise RuntimeError(f"POST answered {response.status_code}: {response.text[:300]}")
                    return dict(response.json())

                big_cpo, big_token = await cpo("BIG")
                small_cpo, small_token = await cpo("SML")
                big_jobs = await asyncio.gather(*(
                    post(big_cpo, big_token, args.fair_locations, f"FAIR{j}") for j in range(args.fair_jobs)))
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


async def poll(http: httpx.AsyncClient, status_url: str, token: dict[str, str],
               on_error: Callable[[BaseException], None], interval: float = 0.1) -> dict[str, Any]:
    failed = 0
    while True:
        try:
            status = (await http.get(status_url, headers=token)).json()
            failed = 0
        except (httpx.HTTPError, ValueError) as err:
            on_error(err)
            failed += 1
            if failed >= MAX_CONSECUTIVE_ERRORS:
                raise
            await asyncio.sleep(interval)
            continue
        if status.get("status") not in ("PENDING", "PROVISIONING"):
            return dict(status)
        await asyncio.sleep(interval)


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ocpplab-bench-") as folder:
        stack = Stack(Path(folder), Ports.free(), workers=args.workers, use_environment=False,
                      say=lambda m: say(f"stack: {m}"))
        try:
            started = time.perf_counter()
            env = await asyncio.to_thread(stack.start_services)
            stack.write_env(env)
            await asyncio.to_thread(stack.start_app, env)
            say(f"the make-run stack is up in {time.perf_counter() - started:.0f}s: {stack.pids()}, "
                f"logs in {stack.logs}")
            runner = Bench(args, stack, env)
            try:
                await runner.run()
            finally:
                print(f"\nbulk-create on the make-run stack: {args.workers} worker process(es), "
                      f"{os.cpu_count()} cores; sizes: --locations {args.locations} --chargers "
                      f"{args.chargers} --big {args.big}; moto reset before each scenario")
                runner.report.print()
        finally:
            await asyncio.to_thread(stack.stop)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, in order, from {', '.join(SCENARIOS)}")
    parser.add_argument("--locations", type=int, default=1000, help="baseline / product / reference size")
    parser.add_argument("--chargers", type=int, default=2, help="chargers per location (baseline, product)")
    parser.add_argument("--big", type=int, default=10_000, help="locations of the big job (1 charger each)")
    parser.add_argument("--pollers", type=int, default=20, help="concurrent status pollers / posting clients")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between one poller's GETs")
    parser.add_argument("--posts", type=int, default=200, help="bodies posted in the latency scenario")
    parser.add_argument("--post-size", type=int, default=10, help="locations per posted body")
    parser.add_argument("--baseline-concurrency", type=int, default=100, help="baseline locations in flight")
    parser.add_argument("--floor-concurrency", type=int, default=32, help="floor / peer locations in flight")
    parser.add_argument("--history-sample", type=int, default=50, help="child histories fetched per job")
    parser.add_argument("--fair-jobs", type=int, default=5, help="fairness: the big CPO's jobs")
    parser.add_argument("--fair-locations", type=int, default=300,
                        help="fairness: locations (2 chargers each) of each of the big CPO's jobs")
    parser.add_argument("--fair-warmup", type=float, default=5.0,
                        help="fairness: seconds between the big CPO's POSTs and the small job's")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: $WORKERS, else 2)")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.workers = args.workers or workers_from_env()
    return args


if __name__ == "__main__":
    asyncio.run(bench(parse()))
