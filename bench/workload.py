"""What the benches post and how they summarize latencies, shared by `python -m bench` and
`python -m bench.wft_load`."""

from __future__ import annotations

import math
from typing import Any


def body(n: int, chargers: int, tag: str) -> dict[str, Any]:
    return {
        "locations": [
            {
                "name": f"Bench {tag} {i}",
                "address": "Rue de la Loi 16",
                "city": "Brussels",
                "country": "BE",
                "coordinates": {"latitude": 50.8 + i / 1e5, "longitude": 4.3 + i / 1e5},
                "public": True,
                "timezone": "Europe/Brussels",
                "chargers": [
                    {"identity": f"{tag}-{i}-{c}", "connector_type": "Type2", "max_power_kw": 22}
                    for c in range(chargers)
                ],
            }
            for i in range(n)
        ]
    }


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of the values, in the values' unit."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
