"""The floor and the peer: the product's work with nothing around it, and as DBOS workflows,
each in a process of its own (bench/floor.py, bench/peer.py, bench/runner.py) on the same stack."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.report import say
from bench.runner import ScenarioProcess

if TYPE_CHECKING:
    from bench.core import Bench


async def floor(b: Bench) -> None:
    await side_scenario(b, "floor", "bench.floor", "raw SQL + aioboto3, no engine")


async def peer(b: Bench) -> None:
    await side_scenario(b, "peer", "bench.peer", "DBOS Transact workflows, steps checkpointed")


async def side_scenario(b: Bench, name: str, module: str, what: str) -> None:
    """The floor or the peer, in a process of its own (bench/runner.py) on the same stack."""
    a = b.args
    n, chargers = a.locations, a.chargers
    await b.prepare(name)
    cpo_id, _ = await b.cpo()
    spec = {
        "cpo_id": int(cpo_id),
        "locations": n,
        "chargers": chargers,
        "tag": f"{name.upper()}{cpo_id}",
        "concurrency": a.floor_concurrency,
    }
    say(f"{name}: {n} x {chargers}, {a.floor_concurrency} in flight, {what}")
    async with ScenarioProcess(module, b.env, spec) as child:
        result = await b.measured(f"{name} {n}x{chargers}", child.go, extra={name: child.pid}, locations=n)
    for kind, count in result["errors"].items():  # its own locations that failed
        b.report.errors[name][kind] += count
    seconds = float(result["seconds"])
    b.seconds[name] = seconds
    done = f"{result['active_locations']} active, {result['task_rows']} task rows" + (
        f", {result['checkpoints']} step checkpoints" if "checkpoints" in result else ""
    )
    b.report.add(
        f"{name} {n} x {chargers} ({what}): time / throughput",
        f"{seconds:.1f} s, {n / seconds:.1f} loc/s ({done})",
    )
    if result["active_locations"] != n or result["task_rows"] != n * chargers:
        b.report.notes.append(
            f"{name}: only {done} of {n} locations x {chargers} chargers"
            + "".join(f"; first error: {e}" for e in result["first_error"])
        )
