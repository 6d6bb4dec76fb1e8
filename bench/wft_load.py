"""Workflow-task timeouts under load: `python -m bench.wft_load`.

On a fresh `make run` stack (devstack.stack.Stack in a temporary folder, as `python -m bench`
starts it), one CPO posts `--jobs` jobs of `--locations` x `--chargers` at once; when every job is
READY the histories of all their workflows are read and the script prints the time to READY
and, per workflow type (the parent BulkCreateLocations, the ProvisionLocation children), how many
workflow tasks there were, how many timed out (start-to-close, or schedule-to-start on a sticky
queue), and how long they took from schedule to start (waiting on the server: no timeout runs)
and from start to completion (inside a worker: the workflow task timeout runs). Settings reach
the stack's processes through the environment, so an A/B run is

    WORKFLOW_TASK_TIMEOUT_SECONDS=10 WORKER_MAX_CONCURRENT_WORKFLOW_TASKS=50 \
        .venv/bin/python -m bench.wft_load --runs 2 --json /tmp/wft.jsonl
    .venv/bin/python -m bench.wft_load --runs 2 --json /tmp/wft.jsonl        # the defaults

Nothing is asserted: the figures are printed (and, with `--json`, appended to a file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client

from bench.procstats import CpuSnapshot, CpuUsage
from bench.workload import body, pct
from contracts.temporal import connect
from devstack.stack import Ports, Stack, workers_from_env
from settings import Settings

SETTINGS_SHOWN = (
    "WORKFLOW_TASK_TIMEOUT_SECONDS",
    "STICKY_SCHEDULE_TO_START_SECONDS",
    "ACTIVITY_TIMEOUT_SECONDS",
    "WORKER_MAX_CONCURRENT_WORKFLOW_TASKS",
    "WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES",
    "WORKER_MAX_CONCURRENT_ACTIVITIES",
    "WORKER_NICE",
    "WORKERS",
    "CHILD_WINDOW",
)


def say(message: str) -> None:
    print(f"[wft-load] {message}", flush=True)


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"p50 {pct(values, 50):.2f} p90 {pct(values, 90):.2f} p99 {pct(values, 99):.2f} "
        f"max {max(values):.2f} s (n={len(values)})"
    )


@dataclass
class Kind:
    """Workflow tasks of one workflow type over the job's histories."""

    workflows: int = 0
    tasks: int = 0
    timed_out: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    schedule_to_start: list[float] = field(default_factory=list)
    start_to_complete: list[float] = field(default_factory=list)
    start_to_timeout: list[float] = field(default_factory=list)
    attempts: Counter[int] = field(default_factory=Counter)
    # (workflow id, started, ended, outcome) of every workflow task, for a closer look (--dump)
    spans: list[tuple[str, float, float, str, str]] = field(default_factory=list)


async def analyse(client: Client, job_ids: list[str]) -> dict[str, Kind]:
    kinds: dict[str, Kind] = defaultdict(Kind)
    runs: list[tuple[str, str, str]] = []
    for job_id in job_ids:
        async for w in client.list_workflows(f'WorkflowId STARTS_WITH "{job_id}"'):
            runs.append((w.id, w.run_id, w.workflow_type))
    gate = asyncio.Semaphore(8)

    async def one(workflow_id: str, run_id: str, workflow_type: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        kind = kinds[workflow_type]
        kind.workflows += 1
        scheduled: datetime | None = None
        identity = ""
        started: datetime | None = None
        for event in history.events:
            at = event.event_time.ToDatetime(tzinfo=UTC)
            name = EventType.Name(event.event_type)
            if name == "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED":
                scheduled, started = at, None
                kind.attempts[event.workflow_task_scheduled_event_attributes.attempt] += 1
            elif name == "EVENT_TYPE_WORKFLOW_TASK_STARTED":
                started = at
                identity = event.workflow_task_started_event_attributes.identity
                kind.tasks += 1
                if scheduled is not None:
                    kind.schedule_to_start.append((at - scheduled).total_seconds())
            elif name == "EVENT_TYPE_WORKFLOW_TASK_COMPLETED" and started is not None:
                kind.start_to_complete.append((at - started).total_seconds())
                kind.spans.append((workflow_id, started.timestamp(), at.timestamp(), "completed", identity))
            elif name == "EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT":
                attrs = event.workflow_task_timed_out_event_attributes
                kind.timed_out[TimeoutType.Name(attrs.timeout_type)] += 1
                if attrs.timeout_type == TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE and started is not None:
                    kind.start_to_timeout.append((at - started).total_seconds())
                    kind.spans.append(
                        (workflow_id, started.timestamp(), at.timestamp(), "timed out", identity)
                    )
            elif name == "EVENT_TYPE_WORKFLOW_TASK_FAILED":
                kind.failed += 1

    await asyncio.gather(*(one(*run) for run in runs))
    return kinds


async def run_once(args: argparse.Namespace, label: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ocpplab-wft-load-") as folder:
        stack = Stack(
            Path(folder),
            Ports.free(),
            workers=args.workers,
            use_environment=False,
            say=lambda m: say(f"{label}: stack: {m}"),
        )
        try:
            env = await asyncio.to_thread(stack.start_services)
            stack.write_env(env)
            await asyncio.to_thread(stack.start_app, env)
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                temporal_address=env["TEMPORAL_ADDRESS"],
                temporal_namespace=env["TEMPORAL_NAMESPACE"],
            )
            client = await connect(settings)
            admin = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
            async with httpx.AsyncClient(base_url=env["API_URL"], timeout=120) as http:
                response = await http.post(
                    "/ocpi/cpos",
                    headers=admin,
                    json={"name": "load", "country_code": "BE", "party_id": "LOD"},
                )
                response.raise_for_status()
                token = {
                    "Authorization": f"Bearer {response.json()['token']}",
                    "Content-Type": "application/json",
                }
                cpo_id = response.json()["cpo_id"]
                contents = [
                    json.dumps(body(args.locations, args.chargers, f"J{j}")).encode()
                    for j in range(args.jobs)
                ]
                pids = stack.pids()
                before = CpuSnapshot.take(pids)
                started = time.perf_counter()

                async def post(content: bytes) -> dict[str, Any]:
                    answer = await http.post(f"/ocpi/cpos/{cpo_id}/locations", headers=token, content=content)
                    if answer.status_code != 202:
                        raise RuntimeError(f"POST answered {answer.status_code}: {answer.text[:300]}")
                    return dict(answer.json())

                jobs = await asyncio.gather(*(post(c) for c in contents))
                ends: list[float] = []

                async def wait(job: dict[str, Any]) -> str:
                    while True:
                        status = (await http.get(job["status_url"], headers=token)).json()
                        if status.get("status") not in ("PENDING", "PROVISIONING"):
                            ends.append(time.perf_counter() - started)
                            return str(status.get("status"))
                        await asyncio.sleep(0.5)

                finals = await asyncio.gather(*(wait(j) for j in jobs))
                elapsed = time.perf_counter() - started
                usage = CpuUsage.between(before, CpuSnapshot.take(pids))
            job_ids = [j["job_id"] for j in jobs]
            kinds = await analyse(client, job_ids)
        finally:
            await asyncio.to_thread(stack.stop)
    total = args.jobs * args.locations
    say(
        f"{label}: {args.jobs} jobs of {args.locations} x {args.chargers}: {Counter(finals)} in "
        f"{elapsed:.1f} s ({total / elapsed:.1f} loc/s; jobs ended at "
        f"{', '.join(f'{e:.1f}' for e in sorted(ends))} s)"
    )
    say(
        f"{label}: CPU s: "
        + ", ".join(f"{n} {v:.1f}" for n, v in sorted(usage.procs.items()))
        + f"; box busy {usage.box_busy:.1f}, iowait {usage.box_iowait:.1f}"
    )
    timeouts = sum(k.timed_out["TIMEOUT_TYPE_START_TO_CLOSE"] for k in kinds.values())
    for name, kind in sorted(kinds.items()):
        say(
            f"{label}: {name}: {kind.workflows} runs, {kind.tasks} workflow tasks, timed out "
            f"{dict(kind.timed_out) or 0}, failed {kind.failed}, "
            f"attempts {dict(sorted(kind.attempts.items()))}"
        )
        say(f"{label}:   schedule->start   {spread(kind.schedule_to_start)}")
        say(f"{label}:   start->complete   {spread(kind.start_to_complete)}")
        if kind.start_to_timeout:
            say(f"{label}:   start->timed out  {spread(kind.start_to_timeout)}")
    if args.dump:
        Path(args.dump).write_text(  # noqa: ASYNC240 (after the run: nothing waits)
            json.dumps({name: k.spans for name, k in kinds.items()})
        )
    return {
        "label": label,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {k: os.environ[k] for k in SETTINGS_SHOWN if k in os.environ},
        "jobs": args.jobs,
        "locations": args.locations,
        "chargers": args.chargers,
        "seconds_to_ready": round(elapsed, 1),
        "wft_start_to_close_timeouts": timeouts,
        "finals": dict(Counter(finals)),
        "per_type": {
            name: {
                "tasks": k.tasks,
                "timed_out": dict(k.timed_out),
                "start_to_complete_p99": round(pct(k.start_to_complete, 99), 2),
                "start_to_complete_max": round(max(k.start_to_complete, default=0), 2),
            }
            for name, k in kinds.items()
        },
        "cpu": {n: round(v, 1) for n, v in usage.procs.items()},
    }


async def main(args: argparse.Namespace) -> None:
    shown = {k: os.environ[k] for k in SETTINGS_SHOWN if k in os.environ}
    label = args.label or (",".join(f"{k}={v}" for k, v in shown.items()) or "defaults")
    for number in range(1, args.runs + 1):
        result = await run_once(args, f"{label} #{number}")
        if args.json:
            with Path(args.json).open("a") as out:  # noqa: ASYNC230 (between runs: nothing waits)
                out.write(json.dumps(result) + "\n")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wft_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--locations", type=int, default=150)
    parser.add_argument("--chargers", type=int, default=2)
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: $WORKERS, else 2)"
    )
    parser.add_argument("--runs", type=int, default=1, help="fresh stacks, one after the other")
    parser.add_argument("--label", default="", help="names the run in the output")
    parser.add_argument("--json", default="", help="append one JSON line per run to this file")
    parser.add_argument("--dump", default="", help="write every workflow task's span to this JSON file")
    args = parser.parse_args(argv)
    args.workers = args.workers or workers_from_env()
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
