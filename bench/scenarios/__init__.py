"""The scenarios, in the order `--scenarios` may name them: each a function of the Bench."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bench.scenarios import baseline, big, fairness, latency, product, side

if TYPE_CHECKING:
    from bench.core import Bench

SCENARIOS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "floor": side.floor,
    "peer": side.peer,
    "baseline": baseline.run,
    "product": product.run,
    "latency": latency.run,
    "big": big.run,
    "fairness": fairness.run,
}
