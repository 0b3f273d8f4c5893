"""Hand-checked decisions of the six FGD-paper policies (arithmetic in the comments)."""

import numpy as np
import pytest
from hypothesis import given, settings

from kubenpu.engine import fit, policies
from kubenpu.engine.framework import MAX_SCORE, Code, Engine
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.model import Placement

from .helpers import cpu_only, engine, node, scores, share, whole
from .test_properties import clusters, requests


def test_dotprod_prefers_the_node_whose_free_vector_aligns_least():
    # A: free (64000 cpu, 2000 npu); B: free (32000, 1000); pod asks (8000, 1000).
    # A: dot = .5*.0625 + .25*.125 = .0625 -> trunc(100*(1-.03125)) = 96
    # B: dot = .25*.0625 + .125*.125 = .03125 -> trunc(100*(1-.015625)) = 98
    eng = engine([node("a", 2), node("b", 1, cpu=32_000)], "dotprod")
    assert scores(eng, whole("p", cpu=8000)) == {0: 96.0, 1: 98.0}
    assert eng.place(whole("p", cpu=8000)).placement.node == "b"


def test_clustering_keeps_pod_kinds_together():
    # 4-NPU nodes; base = 25 * used_milli // 8000.
    # A hosts a share (used 300 + 4000 missing slots of an 8-NPU spec): 25*4300//8000 = 13, +75 = 88
    # B hosts a 1-NPU pod: 25*5000//8000 = 15, +0 (only other kinds) = 15
    # C is empty: 25*4000//8000 = 12, +25 = 37
    # D hosts a share and a 1-NPU pod: 25*5300//8000 = 16, +50 = 66
    nodes = [node(n, 4) for n in "abcd"]
    held = [
        (Placement("s1", "a", ("a-0",), (300,)), share("s1", 300)),
        (Placement("w1", "b", ("b-0",), (1000,)), whole("w1")),
        (Placement("s2", "d", ("d-0",), (300,)), share("s2", 300)),
        (Placement("w2", "d", ("d-1",), (1000,)), whole("w2")),
    ]
    eng = engine(nodes, "clustering", holdings=held)
    assert scores(eng, share("p", 200)) == {0: 88.0, 1: 15.0, 2: 37.0, 3: 66.0}
    # A CPU-only pod scores 0 everywhere: the tie-break decides.
    assert set(scores(eng, cpu_only("c")).values()) == {0.0}


def test_packing_fills_used_devices_then_used_nodes_then_idle_ones():
    # A: device 0 has 700 free -> 100 - (70 // 10) = 93
    # B: a whole pod on device 0, the tightest fitting device is free -> 49
    # C: idle 4-NPU node -> max(33 - 4, 4) = 29
    held = [
        (Placement("s", "a", ("a-0",), (300,)), share("s", 300)),
        (Placement("w", "b", ("b-0",), (1000,)), whole("w")),
    ]
    eng = engine([node("a", 4), node("b", 4), node("c", 4)], "packing", holdings=held)
    assert scores(eng, share("p", 200)) == {0: 93.0, 1: 49.0, 2: 29.0}
    # Whole NPUs: a used node is max(50 - 1, 33) = 49 wherever a free device is left.
    assert scores(eng, whole("p")) == {0: 49.0, 1: 49.0, 2: 29.0}
    placed = eng.place(share("p", 200)).placement
    assert (placed.node, placed.device_ids) == ("a", ("a-0",))


def test_bestfit_normalises_leftovers_min_max():
    # raw = trunc(100 * (1 - (.5*(cpu_left)/128000 + .5*(npu_left)/8000))) after placement:
    # A (64000 cpu, 2 NPUs): .5*63000/128000 + .5*1000/8000 = .3086 -> 69
    # B (32000 cpu, 1 NPU):  .5*31000/128000 + 0                = .1211 -> 87
    # C (64000 cpu, 4 NPUs): .5*63000/128000 + .5*3000/8000 = .4336 -> 56
    # normalised: (s - 56) * 100 // (87 - 56): A 41, B 100, C 0
    eng = engine([node("a", 2), node("b", 1, cpu=32_000), node("c", 4)], "bestfit")
    assert scores(eng, whole("p")) == {0: 41.0, 1: 100.0, 2: 0.0}


def test_bestfit_equal_raw_scores_are_all_zero():
    eng = engine([node("a", 2), node("b", 2)], "bestfit")
    assert scores(eng, whole("p")) == {0: 0.0, 1: 0.0}


def test_fgd_scores_the_fragmentation_change_and_picks_the_device():
    # Mix: half whole 1-NPU pods, half 470-milli shares (1000 cpu each).
    # A has devices free [530, 1000]: whole fits, frag 530; share fits, frag 0 -> F = 265.
    #   share on device 0 -> [60, 1000]: whole frag 60, share frag 60 -> F = 60,
    #     score = trunc(100 * sigmoid((265 - 60) / 1000)) = 55
    #   share on device 1 -> [530, 530]: whole no longer fits (all 1060 is fragment),
    #     share frag 0 -> F = 530, score = trunc(100 * sigmoid(-.265)) = 43
    # B is empty (F = 0); either device gives [530, 1000] -> F = 265 -> 43
    mix = [whole("w", cpu=1000)] * 5 + [share("s", 470, cpu=1000)] * 5
    held = [(Placement("x", "a", ("a-0",), (470,)), share("x", 470))]
    eng = engine([node("a", 2), node("b", 2)], "fgd", pods=mix, holdings=held)
    assert scores(eng, share("p", 470)) == {0: 55.0, 1: 43.0}
    placed = eng.place(share("p", 470)).placement
    assert (placed.node, placed.device_ids) == ("a", ("a-0",))


def test_random_picks_every_feasible_node_sometimes_and_only_those():
    eng = engine([node("a", 2), node("b", 2), node("c", 2, model="B")], "random", seed=7)
    picked = set()
    for i in range(60):
        d = eng.decide(whole(f"p{i}", models=["A"]))
        picked.add(d.placement.node)
    assert picked == {"a", "b"}


@pytest.mark.parametrize("spec", policies.BASELINES)
def test_every_policy_fills_a_small_cluster_exactly(spec):
    # 2 nodes x 2 NPUs: two whole pods, then shares 600+400 and 500+500 fill it all.
    mix = [whole("w"), share("s", 500)]
    eng = engine([node("a", 2), node("b", 2)], spec, pods=mix)
    reqs = [
        whole("w1"),
        whole("w2"),
        share("s1", 600),
        share("s2", 400),
        share("s3", 500),
        share("s4", 500),
    ]
    placed = [eng.place(r) for r in reqs]
    assert all(d.code is Code.SUCCESS for d in placed[:2])
    total = eng.state.allocated_milli()
    # Whatever order the policy used, capacity is never exceeded and nothing is lost.
    assert total == sum(r.device_milli for r, d in zip(reqs, placed, strict=True) if d.placement)
    assert total <= 4000
    assert np.all(eng.state.dev_used <= 1000)


def test_no_fit_is_a_status_with_reasons_not_an_exception():
    eng = engine([node("a", 2), node("cpu", 0)], "bestfit")
    d = eng.place(whole("p", 2))
    assert d.code is Code.SUCCESS
    d = eng.place(whole("q", 1))
    assert d.code is Code.UNSCHEDULABLE and d.placement is None
    assert d.reason == "0/2 nodes are available: 1 Insufficient aliyun.com/npu, 1 no NPU devices."
    d = eng.place(whole("r", 3))
    assert d.code is Code.UNRESOLVABLE  # no node has 3 NPUs, waiting will not help
    d = eng.place(share("s", 100, models=["Z"]))
    assert d.code is Code.UNRESOLVABLE
    assert "1 NPU model not Z" in d.reason


def test_unfit_reasons_for_shares_name_core_and_memory():
    st = ClusterState([node("a", 1)])
    st.reserve(Placement("x", "a", ("a-0",), (800,)), share("x", 800))
    eng = Engine(st, policies.factory("fgd")(st, [share("s", 300)]))
    d = eng.decide(share("p", 300))
    assert "Insufficient aliyun.com/npu-core: no NPU with 30 percent free core" in d.reason


def test_weighted_profiles_add_scores():
    eng = engine([node("a", 2), node("b", 1, cpu=32_000)], "dotprod:2+bestfit")
    # dotprod {96, 98} * 2 + bestfit normalised {0, 100}
    assert scores(eng, whole("p", cpu=8000)) == {0: 192.0, 1: 296.0}


@pytest.mark.parametrize("bad", ["nope", "fgd:0", "fgd:x", "fgd+", ""])
def test_bad_policy_specs_are_config_errors(bad):
    from kubenpu.errors import ConfigError

    with pytest.raises(ConfigError):
        policies.validate(bad)


@settings(max_examples=25, deadline=None)
@given(nodes=clusters(), reqs=requests())
def test_fgd_kept_scores_equal_scoring_every_node_afresh(nodes, reqs):
    # FGD keeps scores per request shape and rescores only changed nodes, one per distinct
    # state; each must equal the paper's score computed now, node by node, over all devices.
    state = ClusterState(nodes)
    eng = Engine(state, policies.factory("fgd")(state, reqs), seed=0)
    frag = eng.profile.parts[0][0].frag
    for k, req in enumerate(reqs):
        cyc = eng.cycle(req)
        got = eng.profile.score(cyc)
        for i, score in zip(cyc.candidates.tolist(), got.tolist(), strict=True):
            one = np.array([i])
            if req.share_milli:
                slots = np.flatnonzero(fit.device_fit(state, req)[i])
                after = frag.after_share(np.full(slots.size, i), slots, req).min()
            else:
                after = frag.after_whole(one, req)[0]
            delta = frag.current[i] - after
            assert score == np.floor(MAX_SCORE / (1 + np.exp(-delta / FULL)))
        eng.place(req)
        if k % 3 == 2:  # giving pods back changes nodes too
            state.unreserve(next(iter(state.holdings), ""))
