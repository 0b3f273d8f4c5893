"""Prices for shares, from the best packing of the workload's share sizes onto devices.

Packing shares onto devices is bin packing. Its linear relaxation over the workload's mix
of share sizes (the cutting-stock LP: how many devices of each way of filling one device,
so that every size is covered in proportion to how often it is asked for) has an optimal
dual: a *price* per size, the fraction of a device a share of that size really costs when
shares are packed as well as the mix allows. An 810-milli share costs a whole device,
because nothing common fills the 190 beside it; two 470s fill a device, so each costs half.

From the prices follows the *potential* of ``h`` free milli: the most a device with ``h``
free could still be worth, the best total price of shares that fit in ``h`` (a knapsack).
A share placed on a device with ``h`` free destroys ``potential[h] - potential[h - share]``
of it; placements that destroy least follow the best packing. The LP is solved by column
generation (Gilmore-Gomory): start from one-size fillings, let the knapsack over the
current prices propose the filling that would lower the device count, repeat until none
would. The knapsack table of the last round is the potential.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from kubenpu.engine.state import FULL

#: Prices closer than this are equal: solver noise, not a preference.
RESOLUTION = 1e-6
#: Column-generation rounds before the current prices are taken as they are.
MAX_ROUNDS = 1000
#: Fillings added per round, at most.
COLUMNS_PER_ROUND = 16
#: Share sizes are rounded up to this grid (milli) for the LP: at most 100 sizes keep it
#: well under a second, and a plan this fine is as good as the mix is certain.
GRID = 10


@dataclass(frozen=True)
class SharePlan:
    """Prices of share sizes and the potential of free compute (see the module text)."""

    #: Distinct share sizes of the mix (milli), ascending.
    sizes: np.ndarray
    #: Price of each size: the fraction of a device it costs in the best packing.
    price: np.ndarray
    #: ``potential[h]``: the best total price of shares fitting in ``h`` milli (0..FULL).
    potential: np.ndarray
    #: Devices the best fractional packing needs per share of the mix.
    devices_per_share: float

    def cost(self, free: np.ndarray, share: int) -> np.ndarray:
        """Potential a ``share`` destroys on devices with ``free`` milli (``free >= share``)."""
        pot = self.potential
        destroyed: np.ndarray = np.round((pot[free] - pot[free - share]) / RESOLUTION) * RESOLUTION
        return destroyed


def _knapsack(sizes: np.ndarray, price: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unbounded knapsack over 0..FULL milli: the best value and the last size taken (-1)."""
    best = np.zeros(FULL + 1)
    last = np.full(FULL + 1, -1, dtype=np.int64)
    for h in range(int(sizes[0]), FULL + 1):
        best[h], last[h] = best[h - 1], -1
        k = int(np.searchsorted(sizes, h, side="right"))
        values = best[h - sizes[:k]] + price[:k]
        j = int(np.argmax(values))
        if values[j] > best[h] + RESOLUTION:
            best[h], last[h] = values[j], j
    return best, last


def _filling(sizes: np.ndarray, last: np.ndarray, h: int) -> np.ndarray:
    """How many of each size the knapsack's best filling of ``h`` milli holds."""
    counts = np.zeros(sizes.size)
    while h > 0:
        if last[h] < 0:
            h -= 1
        else:
            counts[last[h]] += 1
            h -= int(sizes[last[h]])
    return counts


def plan_shares(demand: Iterable[tuple[int, float]]) -> SharePlan:
    """The prices for a mix of share sizes: (milli, how often it is asked for) pairs, a size
    possibly in several pairs (a task mix has one per shape).

    An empty mix gives an all-zero potential: every placement destroys nothing, so the
    plan leaves the choice to whatever ranks placements next.
    """
    from scipy.optimize import linprog  # imported here: only policies that price shares pay

    rounded: dict[int, float] = {}
    for size, n in demand:
        if n > 0 and 0 < size <= FULL:
            up = -(-size // GRID) * GRID
            rounded[up] = rounded.get(up, 0.0) + n
    sizes = np.array(sorted(rounded), dtype=np.int64)
    if sizes.size == 0:
        return SharePlan(sizes, np.zeros(0), np.zeros(FULL + 1), 0.0)
    need = np.array([rounded[int(s)] for s in sizes])
    need /= need.sum()
    # Start from the fillings with one size only: always enough to cover the mix.
    columns = [np.eye(sizes.size)[i] * (FULL // s) for i, s in enumerate(sizes)]
    for _ in range(MAX_ROUNDS):
        lp = linprog(
            np.ones(len(columns)),
            A_ub=-np.column_stack(columns),
            b_ub=-need,
            bounds=(0, None),
            method="highs",
        )
        if lp.status != 0:
            raise RuntimeError(f"share packing LP failed: {lp.message}")
        price = np.maximum(-lp.ineqlin.marginals, 0.0)
        potential, last = _knapsack(sizes, price)
        # A filling worth more than one device would lower the count: add the best filling
        # around each size that is worth more (a few per round saves rounds) and re-solve.
        around = potential[FULL - sizes] + price
        better = np.flatnonzero(around > 1 + RESOLUTION)
        if better.size == 0:
            break
        for i in better[np.argsort(-around[better], kind="stable")][:COLUMNS_PER_ROUND]:
            filling = _filling(sizes, last, FULL - int(sizes[i]))
            filling[i] += 1
            columns.append(filling)
    return SharePlan(sizes, price, potential, float(lp.fun))
