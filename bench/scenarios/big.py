"""A big job against a reference job: time per location, worker memory, the largest history."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.procstats import RssSampler
from bench.report import ms, say
from worker.histories import job_histories

if TYPE_CHECKING:
    from bench.core import Bench


async def run(b: Bench) -> None:
    a = b.args
    reference_n, big_n = a.locations, a.big
    await b.prepare("big: reference")
    say(f"big: reference {reference_n} x 1")
    ref_elapsed, *_ = await b.measured(
        f"reference {reference_n}x1", lambda: b.run_job(reference_n, 1, 1, 1.0, "REF")
    )
    b.report.add(
        f"reference {reference_n} x 1: time / per location",
        f"{ref_elapsed:.1f} s, {ms(ref_elapsed / reference_n)} per location",
    )
    await b.prepare("big")
    workers = {name: pid for name, pid in b.stack.pids().items() if name.startswith("worker-")}
    sampler = RssSampler(workers)
    sampler.start()
    say(f"big: {big_n} x 1 in one job")
    big_elapsed, answered, _, _, job_id = await b.measured(
        f"big {big_n}x1", lambda: b.run_job(big_n, 1, 1, 1.0, "BIG")
    )
    peaks = await sampler.stop()
    ratio = (big_elapsed / big_n) / (ref_elapsed / reference_n)
    b.report.add(
        f"big {big_n:,} x 1 in one job: time to READY",
        f"{big_elapsed:.1f} s, {ms(big_elapsed / big_n)} per location (202 in {ms(answered)})",
    )
    b.report.add(
        f"big: time per location / reference's ({reference_n:,} x 1)",
        f"{ratio:.2f}x",
        target="<= 1.5x",
        met=ratio <= 1.5,
    )
    peak = max(peaks.values(), default=0)
    rss = ", ".join(f"{k} {v / 1024:.0f} MB" for k, v in sorted(peaks.items()))
    b.report.add("big: worker peak RSS", rss, target="<= 300 MB", met=peak / 1024 <= 300)
    h = await job_histories(b.temporal, job_id, a.history_sample)
    b.report.add(
        f"big: largest history over the job's {h.parent_runs + h.children:,} workflows",
        f"{h.max_events:,} events (parent runs max {h.parent_max_events:,}, "
        f"children max {h.child_max_events:,})",
        target="<= 10,240",
        met=h.max_events <= 10_240,
    )
    b.history_rows(f"big {big_n:,} x 1", h)
