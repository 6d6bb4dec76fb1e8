"""Where the CPU and the memory went, read from /proc (Linux; no psutil).

CPU of a process is counted with its whole process tree (PostgreSQL runs one backend process per
connection under its postmaster), plus what its reaped children used, but without the trees of
the other processes named (the bench's own count leaves out the stack it started).
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

TICK = float(os.sysconf("SC_CLK_TCK"))


def _read_stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU seconds, reaped children's CPU seconds), or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    ppid = int(fields[1])
    own = (int(fields[11]) + int(fields[12])) / TICK
    reaped = (int(fields[13]) + int(fields[14])) / TICK
    return ppid, own, reaped


def tree_cpu(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and everything under it."""
    table: dict[int, tuple[int, float, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat is not None:
                table[int(entry.name)] = stat
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _, _) in table.items():
        children[ppid].append(pid)
    named = set(roots.values())
    result: dict[str, float] = {}
    for name, root in roots.items():
        if root not in table:
            continue
        total = table[root][2]
        stack = [root]
        while stack:
            pid = stack.pop()
            total += table[pid][1]
            # a named process under another (the stack under the bench) counts only for itself
            stack.extend(child for child in children.get(pid, []) if child not in named)
        result[name] = total
    return result


def box_cpu() -> tuple[float, float, float]:
    """(busy, iowait, all) CPU seconds of the whole machine since boot, all cores."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in first[:8]]  # user nice system idle iowait irq softirq steal
    total = sum(ticks)
    idle, iowait = ticks[3], ticks[4]
    return (total - idle - iowait) / TICK, iowait / TICK, total / TICK


@dataclass
class CpuSnapshot:
    procs: dict[str, float]
    box: tuple[float, float, float]

    @classmethod
    def take(cls, roots: dict[str, int]) -> CpuSnapshot:
        return cls(tree_cpu(roots), box_cpu())


@dataclass
class CpuUsage:
    """CPU seconds per process between two snapshots, and the machine's busy/iowait seconds."""

    procs: dict[str, float]
    box_busy: float
    box_iowait: float
    box_all: float

    @classmethod
    def between(cls, before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
        procs = {name: after.procs[name] - before.procs.get(name, 0.0) for name in after.procs}
        busy, iowait, total = (a - b for a, b in zip(after.box, before.box, strict=True))
        return cls(procs, busy, iowait, total)


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return values


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of a process we own; False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class RssSampler:
    """Samples VmRSS of some processes every `interval` seconds; peak = max(sampled, VmHWM)."""

    pids: dict[str, int]
    interval: float = 0.5
    peak_kb: dict[str, int] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        for pid in self.pids.values():
            reset_peak_rss(pid)
        self.peak_kb = {name: 0 for name in self.pids}
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self.interval)

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            mem = memory_kb(pid)
            self.peak_kb[name] = max(self.peak_kb.get(name, 0), mem.get("VmRSS", 0), mem.get("VmHWM", 0))

    async def stop(self) -> dict[str, int]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._sample()
        return self.peak_kb
