"""Share prices: the LP optimum found by column generation, and the costs it implies."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from kubenpu.engine.share_plan import RESOLUTION, plan_shares
from kubenpu.engine.state import FULL


def every_filling_lp(demand: dict[int, int]) -> float:
    """Devices per share of the best fractional packing, over every filling of a device."""
    sizes = sorted(demand)
    fillings = [
        k
        for k in itertools.product(*(range(FULL // s + 1) for s in sizes))
        if 0 < sum(n * s for n, s in zip(k, sizes, strict=True)) <= FULL
    ]
    need = np.array([demand[s] for s in sizes], dtype=float)
    lp = linprog(
        np.ones(len(fillings)),
        A_ub=-np.array(fillings, dtype=float).T,
        b_ub=-need / need.sum(),
        bounds=(0, None),
        method="highs",
    )
    return float(lp.fun)


def test_one_size_costs_its_slot():
    plan = plan_shares({500: 7}.items())
    assert plan.price.tolist() == pytest.approx([0.5])
    assert plan.devices_per_share == pytest.approx(0.5)
    assert plan.potential[FULL] == pytest.approx(1.0)
    assert plan.potential[499] == 0.0


def test_a_share_nothing_can_join_costs_a_whole_device():
    # 810s outnumber the 160s that could fill their 190: an 810 costs a device, a 160 rides free.
    plan = plan_shares({810: 10, 160: 1}.items())
    assert plan.price.tolist() == pytest.approx([0.0, 1.0])
    assert plan.devices_per_share == pytest.approx(10 / 11)


def test_a_320_opens_a_device_rather_than_spoil_a_470s_pair():
    # 470s pair with each other (60 left) and 320s with 650s (30 left). On a device a 470
    # already holds (530 free), a 320 would leave 210 nothing common fills: that costs more
    # than starting a fresh device, which a 650 can complete.
    plan = plan_shares({470: 750, 320: 330, 650: 250}.items())
    on_the_470 = plan.cost(np.array([530]), 320)[0]
    fresh = plan.cost(np.array([FULL]), 320)[0]
    assert fresh < on_the_470
    # A 470 is as well placed beside another 470 as on a fresh device.
    assert plan.cost(np.array([530]), 470)[0] == pytest.approx(plan.cost(np.array([FULL]), 470)[0])


def test_no_shares_gives_a_plan_that_prefers_nothing():
    plan = plan_shares({}.items())
    assert plan.sizes.size == 0
    assert (plan.cost(np.array([FULL, 600, 10]), 10) == 0).all()


def test_sizes_are_priced_on_a_ten_milli_grid():
    assert plan_shares({333: 1}.items()).sizes.tolist() == [340]
    assert plan_shares({331: 1, 340: 2}.items()).sizes.tolist() == [340]


@settings(max_examples=30, deadline=None)
@given(
    st.dictionaries(
        st.integers(20, 100).map(lambda x: x * 10), st.integers(1, 50), min_size=1, max_size=4
    )
)
def test_column_generation_reaches_the_lp_optimum_with_feasible_prices(demand):
    plan = plan_shares(demand.items())
    assert plan.devices_per_share == pytest.approx(every_filling_lp(demand), abs=1e-7)
    # Dual feasible: no filling of a device is worth more than one device.
    assert plan.potential[FULL] <= 1 + 1e-6
    # Strong duality: the prices of the mix add up to the devices it needs.
    need = np.array([demand[int(s)] for s in plan.sizes], dtype=float)
    assert need @ plan.price / need.sum() == pytest.approx(plan.devices_per_share, abs=1e-7)
    assert (np.diff(plan.potential) >= -RESOLUTION).all()
