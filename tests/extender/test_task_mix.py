"""A task mix given by configuration replaces the estimate from the cluster."""

from __future__ import annotations

from extender.fakeapi import node
from kubenpu.extender.cache import ClusterCache
from kubenpu.model import Request

MIX = [Request("m1", npus=1), Request("m2", share_milli=300), Request("cpu", cpu_milli=1000)]


def test_a_configured_mix_is_the_mix_and_never_changes() -> None:
    cache = ClusterCache("fgd", task_mix=MIX)
    cache.upsert_node(node("n1"))
    engine = cache.engine()
    # All of it, CPU-only pods too: the mix the simulator gives the same policy.
    assert cache._mix() == MIX
    cache.note_request(Request("other", share_milli=700))
    assert cache._mix() == MIX
    assert cache.engine() is engine  # nothing to rebuild: same state, same mix


def test_without_one_the_mix_follows_recent_requests() -> None:
    cache = ClusterCache("fgd")
    cache.upsert_node(node("n1"))
    engine = cache.engine()
    seen = Request("seen", share_milli=700)
    cache.note_request(seen)
    assert cache._mix() == [seen]
    assert cache.engine() is not engine
