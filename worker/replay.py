"""`make replay`: replay recent histories from a running server against the current workflow code.

The gate before a deploy (docs/deploy.md): a change to workflow code that would make a running
workflow fail on replay (a non-determinism error) shows here, against real histories, before any
worker with that code polls. Reaches the server of `.data/stack.env` (or TEMPORAL_ADDRESS...).

    make replay                                   # the last day's workflows, 200 at most
    make replay REPLAY_ARGS="--hours 6 --limit 1000"
    make replay REPLAY_ARGS="--query 'CpoId = \"7\"'"
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.client import Client
from temporalio.worker import Replayer

from contracts.temporal import connect
from settings import get_settings
from worker.workers import WORKFLOWS, workflow_runner


@dataclass
class ReplayReport:
    replayed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (workflow id, error)


def recent_query(hours: float) -> str:
    since = (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
    types = ", ".join(f"'{w.__temporal_workflow_definition.name}'" for w in WORKFLOWS)  # type: ignore[attr-defined]
    return f"WorkflowType IN ({types}) AND StartTime > '{since}'"


async def replay_recent(client: Client, query: str, limit: int) -> ReplayReport:
    """Replay up to `limit` histories that `query` lists (open and closed runs alike)."""
    replayer = Replayer(
        workflows=WORKFLOWS, workflow_runner=workflow_runner(), data_converter=client.data_converter
    )
    report = ReplayReport()
    histories = client.list_workflows(query, limit=limit).map_histories()
    async with replayer.workflow_replay_iterator(histories) as results:
        async for result in results:
            report.replayed += 1
            if result.replay_failure is not None:
                report.failures.append((result.history.workflow_id, repr(result.replay_failure)))
    return report


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--hours", type=float, default=24, help="workflows started this recently")
    parser.add_argument("--limit", type=int, default=200, help="histories to replay at most")
    parser.add_argument("--query", help="a visibility query instead of the recent workflows")
    args = parser.parse_args(argv)
    settings = get_settings()
    client = await connect(settings)
    query = args.query or recent_query(args.hours)
    print(
        f"replaying up to {args.limit} histories from {settings.temporal_address} "
        f"({settings.temporal_namespace}): {query}",
        flush=True,
    )
    report = await replay_recent(client, query, args.limit)
    for workflow_id, error in report.failures:
        print(f"FAILED {workflow_id}: {error}")
    print(f"{report.replayed} replayed, {len(report.failures)} failed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
