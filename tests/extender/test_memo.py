"""The extender's memo of node rows gives the same answers as computing them afresh."""

from __future__ import annotations

import random
from typing import Any

from extender.fakeapi import node, pod
from kubenpu.extender.cache import ClusterCache
from kubenpu.extender.core import Extender


def _extender() -> Extender:
    ext = Extender(ClusterCache("fgd"))
    ext.cache.replace_nodes([node(f"n{i}", npus) for i, npus in enumerate([0, 2, 4, 8] * 3)])
    return ext


def test_prioritize_after_filter_scores_as_without_the_memo() -> None:
    rng = random.Random(1)
    ext = _extender()
    for k in range(30):
        names = [f"n{i}" for i in range(12)] + ["unknown"]
        rng.shuffle(names)
        args: Any = {"Pod": pod(f"p{k}", npus=rng.choice([1, 2, 4])), "NodeNames": names}
        passed = ext.filter(args, names)["NodeNames"] or []
        remembered = ext.scores(args, passed)
        ext._recent.clear()
        assert remembered == ext.scores(args, list(passed))
        # The caller owns the answer: changing it must not confuse the next call.
        passed = ext.filter(args, names)["NodeNames"] or []
        passed.reverse()
        remembered = ext.scores(args, passed)
        ext._recent.clear()
        assert remembered == ext.scores(args, list(passed))
