"""The engine's own steps as the extender calls them: filter with reasons, score, decide."""

from __future__ import annotations

import numpy as np
import pytest

from engine.helpers import cpu_only, engine, node, share, whole
from kubenpu.engine.fit import REASONS, Reason
from kubenpu.model import Placement


def test_reasons_are_codes_into_the_enum_with_their_texts() -> None:
    eng = engine([node("a", 2), node("cpu", 0), node("b", 2, model="B")], "bestfit")
    eng.place(whole("p", 2))
    req = whole("q", 1, models=["A"])
    codes = eng.reasons(req)
    assert [REASONS[c] for c in codes.tolist()] == [Reason.NPU, Reason.NO_NPU, Reason.MODEL]
    assert not eng.filter(req).any()
    assert [r.text(req) for r in REASONS[:4]] == [
        "no NPU devices",
        "NPU model not A",
        "fewer than 1 healthy aliyun.com/npu",
        "Insufficient aliyun.com/npu",
    ]
    assert {r for r in Reason if r.unresolvable} == {Reason.NO_NPU, Reason.MODEL}
    # A node that fits has no reason.
    assert eng.reasons(cpu_only("c")).tolist() == [-1, -1, -1]


@pytest.mark.parametrize("milli", [1, 333, 999])
def test_reason_texts_are_printf_safe(milli: int) -> None:
    assert all("%" not in r.text(share("s", milli, models=["A"])) for r in Reason)


@pytest.mark.parametrize("spec", ["bestfit", "fgd", "kubenpu", "random", "packing"])
def test_score_picks_what_decide_places(spec: str) -> None:
    mix = [whole("w"), share("s", 500)]
    eng = engine([node(f"n{i}", 4) for i in range(6)], spec, pods=mix, seed=3)
    for req in [whole(f"w{i}") if i % 2 else share(f"s{i}", 300) for i in range(12)]:
        rng = eng.rng.bit_generator.state
        scored = eng.score(req)
        eng.rng.bit_generator.state = rng  # the same draw for decide (random policy)
        decision = eng.place(req)
        assert decision.placement is not None
        assert decision.placement.node == eng.state.nodes[scored.pick].name
        best = scored.cycle.candidates[scored.scores == scored.scores.max()]
        assert scored.pick == best[np.argmin(eng.rank[best])]


def test_decide_on_one_node_chooses_its_devices_or_says_why_not() -> None:
    held = [(Placement("x", "a", ("a-0", "a-1", "a-2"), (1000,) * 3), whole("x", 3))]
    eng = engine([node("a", 4), node("b", 4, groups=2)], "fgd", holdings=held)
    decision = eng.decide_on(whole("q", 2), 0)
    assert decision.placement is None
    assert decision.reason == "0/1 nodes are available: 1 Insufficient aliyun.com/npu."
    decision = eng.decide_on(whole("q", 2), 1)
    assert decision.placement is not None
    assert decision.placement.device_ids in (("b-0", "b-1"), ("b-2", "b-3"))
    assert eng.score(whole("big", 5)).pick == -1
