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
            then while a `--load-locations` x `--chargers` job provisions: `--pollers` clients
            post `--posts` bodies of `--post-size` locations of 1 charger (202 latency
            p50/p99), and the two big bodies again. Every job it started is cancelled through
            Temporal, the stack drained.
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
import os
import tempfile
import time
from pathlib import Path

from bench.core import Bench
from bench.report import say
from bench.scenarios import SCENARIOS
from devstack.stack import Ports, Stack, workers_from_env


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ocpplab-bench-") as folder:
        stack = Stack(
            Path(folder),
            Ports.free(),
            workers=args.workers,
            use_environment=False,
            say=lambda m: say(f"stack: {m}"),
        )
        try:
            started = time.perf_counter()
            env = await asyncio.to_thread(stack.start_services)
            stack.write_env(env)
            await asyncio.to_thread(stack.start_app, env)
            say(
                f"the make-run stack is up in {time.perf_counter() - started:.0f}s: {stack.pids()}, "
                f"logs in {stack.logs}"
            )
            runner = Bench(args, stack, env)
            try:
                await runner.run()
            finally:
                print(
                    f"\nbulk-create on the make-run stack: {args.workers} worker process(es), "
                    f"{os.cpu_count()} cores; sizes: --locations {args.locations} --chargers "
                    f"{args.chargers} --big {args.big}; moto reset before each scenario"
                )
                runner.report.print()
        finally:
            await asyncio.to_thread(stack.stop)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, in order, from {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--locations", type=int, default=1000, help="baseline / product / reference size")
    parser.add_argument("--chargers", type=int, default=2, help="chargers per location (baseline, product)")
    parser.add_argument("--big", type=int, default=10_000, help="locations of the big job (1 charger each)")
    parser.add_argument("--pollers", type=int, default=20, help="concurrent status pollers / posting clients")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between one poller's GETs")
    parser.add_argument("--posts", type=int, default=200, help="bodies posted in the latency scenario")
    parser.add_argument(
        "--load-locations",
        type=int,
        default=2000,
        help="latency: the job (x --chargers) that provisions while the clients post",
    )
    parser.add_argument("--post-size", type=int, default=10, help="locations per posted body")
    parser.add_argument("--baseline-concurrency", type=int, default=100, help="baseline locations in flight")
    parser.add_argument("--floor-concurrency", type=int, default=32, help="floor / peer locations in flight")
    parser.add_argument("--history-sample", type=int, default=50, help="child histories fetched per job")
    parser.add_argument("--fair-jobs", type=int, default=5, help="fairness: the big CPO's jobs")
    parser.add_argument(
        "--fair-locations",
        type=int,
        default=300,
        help="fairness: locations (2 chargers each) of each of the big CPO's jobs",
    )
    parser.add_argument(
        "--fair-warmup",
        type=float,
        default=5.0,
        help="fairness: seconds between the big CPO's POSTs and the small job's",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: $WORKERS, else 2)"
    )
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.workers = args.workers or workers_from_env()
    return args


if __name__ == "__main__":
    asyncio.run(bench(parse()))
