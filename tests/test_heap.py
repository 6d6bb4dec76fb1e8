"""The collector's settings of the API and worker processes (contracts/heap.py)."""

from __future__ import annotations

import gc

from contracts.heap import settle_heap
from settings import Settings


def test_settle_heap_freezes_start_up_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    try:
        settle_heap(Settings(_env_file=None).gc_gen0_threshold)  # type: ignore[call-arg]
        young, middle, old = gc.get_threshold()
        assert young == 20_000  # the documented default, not CPython's 700
        assert (middle, old) == before[1:]
        assert gc.get_freeze_count() > 10_000  # the test process's modules are out of sight
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
