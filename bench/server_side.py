"""Latency as the API measured it, next to what the bench's clients saw.

On one small box a client's figure includes the time the client itself waited for a core; the
API's own histograms (`GET /metrics`) do not. The bench scrapes them before and after a phase and
reads quantiles from the difference: an upper bound, the first bucket holding the quantile.
"""

from __future__ import annotations

import math
from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "ocpplab_api_request_duration_seconds"
WORKFLOW_START = "ocpplab_api_workflow_start_duration_seconds"

Buckets = dict[tuple[str, str, str], dict[float, float]]  # (metric, route, method) -> le -> count


async def scrape(http: httpx.AsyncClient) -> Buckets:
    response = await http.get("/metrics")
    response.raise_for_status()
    buckets: Buckets = defaultdict(dict)
    for family in text_string_to_metric_families(response.text):
        if family.name not in (REQUESTS, WORKFLOW_START):
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                key = (family.name, sample.labels.get("route", ""), sample.labels.get("method", ""))
                buckets[key][float(sample.labels["le"])] = sample.value
    return buckets


def quantile(
    before: Buckets, after: Buckets, q: float, metric: str, route: str = "", method: str = ""
) -> tuple[float, int]:
    """(upper bound of the q-quantile in seconds, observations) between two scrapes."""
    key = (metric, route, method)
    now, then = after.get(key, {}), before.get(key, {})
    cumulative = sorted((le, count - then.get(le, 0.0)) for le, count in now.items())
    total = cumulative[-1][1] if cumulative else 0.0
    if total <= 0:
        return math.nan, 0
    for le, count in cumulative:
        if count >= q / 100 * total:
            return le, int(total)
    return math.inf, int(total)


def bound(seconds: float) -> str:
    """`<= 20 ms` (a bucket's upper bound), `> 30 s` past the last one."""
    if math.isnan(seconds):
        return "n/a"
    if math.isinf(seconds):
        return "> 30 s"
    return f"<= {seconds * 1000:g} ms"
