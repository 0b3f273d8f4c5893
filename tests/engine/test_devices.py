"""Device choice inside a node: packed shares, topology-aware whole NPUs."""

from kubenpu.engine import policies
from kubenpu.engine.framework import Engine
from kubenpu.engine.state import ClusterState
from kubenpu.model import Placement

from .helpers import node, share, whole


def on_one_node(held, req):
    st = ClusterState([node("n", 8, groups=2)])  # devices 0-3 in group 0, 4-7 in group 1
    for p, r in held:
        st.reserve(p, r)
    eng = Engine(st, policies.factory("bestfit")(st, []))
    return eng.place(req).placement.device_ids


def test_whole_npus_take_the_tightest_group_that_holds_them_all():
    held = [(Placement("x", "n", ("n-0",), (1000,)), whole("x"))]  # group 0 has 3 free, group 1 4
    assert on_one_node(held, whole("p", 3)) == ("n-1", "n-2", "n-3")
    assert on_one_node(held, whole("p", 4)) == ("n-4", "n-5", "n-6", "n-7")


def test_whole_npus_span_as_few_groups_as_possible():
    held = [(Placement("x", "n", ("n-0",), (1000,)), whole("x"))]
    # 5 devices: all 4 of group 1, then one of group 0.
    assert on_one_node(held, whole("p", 5)) == ("n-4", "n-5", "n-6", "n-7", "n-1")


def test_shares_go_to_the_fullest_device_that_fits():
    held = [
        (Placement("x", "n", ("n-2",), (500,)), share("x", 500)),
        (Placement("y", "n", ("n-5",), (800,)), share("y", 800)),
    ]
    assert on_one_node(held, share("p", 200)) == ("n-5",)
    assert on_one_node(held, share("p", 300)) == ("n-2",)
    assert on_one_node(held, share("p", 600)) == ("n-0",)
