"""The collector's settings of a long-lived process (the API, the worker), applied once start-up is
done.

Start-up's objects (modules, the app, the schemas, the SDK) live as long as the process: frozen,
they are out of the collector's sight, so a full collection scans only what the work allocates.
A bulk body then allocates a model per location and per charger, all alive until its answer:
with CPython's default young-generation threshold (700) the collector runs hundreds of times over
objects that cannot be freed yet. A higher threshold spends the same memory bound (a few MB of
young objects) on far fewer passes. The figures are in docs/performance.md.
"""

from __future__ import annotations

import gc


def settle_heap(gen0_threshold: int) -> None:
    """Freeze what start-up allocated, and collect the young generation every `gen0_threshold`
    allocations (CPython's older generations keep their default ratios to it)."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
