import re

import numpy as np
import pytest

from kubenpu.engine.state import ClusterState
from kubenpu.errors import PlacementError
from kubenpu.model import Placement

from .helpers import cpu_only, node, share, whole


def test_reserve_and_unreserve_restore_every_array():
    st = ClusterState([node("a", 4), node("b", 2)])
    before = (st.cpu_free.copy(), st.mem_free.copy(), st.dev_free.copy(), st.full_free.copy())
    st.reserve(Placement("p", "a", ("a-0", "a-1"), (1000, 1000)), whole("p", 2, cpu=3000))
    st.reserve(Placement("q", "a", ("a-2",), (300,)), share("q", 300))
    assert st.cpu_free[0] == 64_000 - 3000 - 1000
    assert st.dev_free[0].tolist() == [0, 0, 700, 1000]
    assert st.full_free.tolist() == [1, 2]
    assert st.free_total.tolist() == [1700, 2000]
    assert st.allocated_milli() == 2300
    assert st.kind_count[0, 2] == 1 and st.kind_count[0, 0] == 1
    st.unreserve("p")
    st.unreserve("q")
    assert st.unreserve("q") is None  # idempotent
    after = (st.cpu_free, st.mem_free, st.dev_free, st.full_free)
    for x, y in zip(before, after, strict=True):
        assert np.array_equal(x, y)
    assert st.kind_count.sum() == 0


@pytest.mark.parametrize(
    ("placement", "request_", "message"),
    [
        (
            Placement("p", "a", ("a-0",), (1000,)),
            whole("p", cpu=65_000),
            "cpu asked 65000m, free 64000m",
        ),
        (Placement("p", "zz", (), ()), cpu_only("p"), "unknown node"),
        (Placement("p", "a", ("b-0",), (1000,)), whole("p"), "has no device"),
        (Placement("p", "a", ("a-0", "a-0"), (1000, 1000)), whole("p", 2), "listed twice"),
        (Placement("p", "a", ("a-0",), (1000,)), whole("p", 2), "2 NPUs asked, 1 devices given"),
        (
            Placement("p", "a", ("a-0",), (1000,)),
            whole("p", models=["B"]),
            "model 'A' not in ['B']",
        ),
        (Placement("p", "a", ("a-0",), (1000,)), cpu_only("p"), "without NPU requests"),
    ],
)
def test_reserve_rejects_what_does_not_fit(placement, request_, message):
    st = ClusterState([node("a", 2)])
    with pytest.raises(PlacementError, match=re.escape(message)):
        st.reserve(placement, request_)
    assert st.allocated_milli() == 0 and not st.holdings


def test_whole_and_shared_never_mix_on_a_device():
    st = ClusterState([node("a", 1)])
    st.reserve(Placement("s", "a", ("a-0",), (100,)), share("s", 100))
    with pytest.raises(PlacementError, match="not wholly free"):
        st.reserve(Placement("w", "a", ("a-0",), (1000,)), whole("w"))
    st.unreserve("s")
    st.reserve(Placement("w", "a", ("a-0",), (1000,)), whole("w"))
    with pytest.raises(PlacementError, match="0 milli free"):
        st.reserve(Placement("s2", "a", ("a-0",), (100,)), share("s2", 100))


def test_shares_add_up_to_at_most_one_device():
    st = ClusterState([node("a", 1)])
    st.reserve(Placement("s1", "a", ("a-0",), (600,)), share("s1", 600))
    st.reserve(Placement("s2", "a", ("a-0",), (400,)), share("s2", 400))
    with pytest.raises(PlacementError, match="0 milli free"):
        st.reserve(Placement("s3", "a", ("a-0",), (1,)), share("s3", 1))


def test_a_pod_holds_one_placement():
    st = ClusterState([node("a", 2)])
    st.reserve(Placement("p", "a", ("a-0",), (1000,)), whole("p"))
    with pytest.raises(PlacementError, match="already holds"):
        st.reserve(Placement("p", "a", ("a-1",), (1000,)), whole("p"))


def test_unhealthy_device_offers_nothing_but_keeps_its_holder():
    st = ClusterState([node("a", 2)])
    st.reserve(Placement("p", "a", ("a-0",), (300,)), share("p", 300))
    st.set_device_health("a", "a-0", False)
    st.set_device_health("a", "a-1", False)
    assert st.dev_free[0].tolist() == [0, 0]
    assert st.allocated_milli() == 300
    st.set_device_health("a", "a-1", True)
    assert st.dev_free[0].tolist() == [0, 1000]
    st.unreserve("p")
    st.set_device_health("a", "a-0", True)
    assert st.dev_free[0].tolist() == [1000, 1000]


def test_node_version_marks_changed_rows():
    st = ClusterState([node("a", 1), node("b", 1)])
    v = st.version
    st.reserve(Placement("p", "b", ("b-0",), (1000,)), whole("p"))
    assert st.node_version[1] > v and st.node_version[0] <= v


def test_duplicate_node_names_are_rejected():
    with pytest.raises(PlacementError, match="duplicate node"):
        ClusterState([node("a", 1), node("a", 2)])
