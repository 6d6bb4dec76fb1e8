"""What the bench prints: one table of figures against their targets, then CPU per scenario
and per location, and the client errors counted per scenario."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bench.procstats import CpuUsage


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


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

    def add(
        self, what: str, value: str, target: str = "", baseline: str = "", met: bool | None = None
    ) -> None:
        self.rows.append(Row(what, value, target, baseline, met))
        verdict = "" if met is None else ("  [met]" if met else "  [NOT met]")
        say(f"{what}: {value}{'  target ' + target if target else ''}{verdict}")

    def print(self) -> None:
        headers = ("measure", "value", "target", "direct baseline", "")
        table = [
            (r.what, r.value, r.target, r.baseline, "" if r.met is None else ("met" if r.met else "NOT met"))
            for r in self.rows
        ]
        widths = [
            max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(headers)
        ]
        line = "  ".join("-" * w for w in widths)
        print("\n" + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        print(line)
        for row in table:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if self.cpu:
            names = sorted({n for _, _, usage, _ in self.cpu for n in usage.procs}, key=_proc_order)
            print(
                "\nCPU seconds per scenario (process and its children; box = whole machine, 2 cores"
                " shared with others):"
            )
            head = ["scenario", "wall s", *names, "box busy", "box iowait"]
            cells = [
                [
                    label,
                    f"{wall:.1f}",
                    *(f"{usage.procs.get(n, 0.0):.1f}" for n in names),
                    f"{usage.box_busy:.1f}",
                    f"{usage.box_iowait:.1f}",
                ]
                for label, wall, usage, _ in self.cpu
            ]
            _table(head, cells)
            per = [(label, usage, n) for label, _, usage, n in self.cpu if n]
            if per:
                print(
                    "\nCPU ms per location (same processes; `all` counts every one: the baseline runs"
                    " in the bench's process, for the product the bench is its polling clients):"
                )
                head = ["scenario", *names, "all"]
                cells = [
                    [
                        label,
                        *(f"{usage.procs.get(p, 0.0) * 1000 / n:.1f}" for p in names),
                        f"{sum(usage.procs.values()) * 1000 / n:.1f}",
                    ]
                    for label, usage, n in per
                ]
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
