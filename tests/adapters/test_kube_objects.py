"""Writing model nodes and pods as Kubernetes objects reads back the same model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenpu.adapters.kube import node_from_object, request_from_pod
from kubenpu.adapters.kube_objects import node_object, pod_object
from kubenpu.errors import ObjectError
from kubenpu.model import Device, Node, Request
from kubenpu.names import LABEL_NPU_MODEL

models = st.sampled_from(["A10", "V100M16", "hanguang-800"])


@given(
    st.integers(0, 8),
    models,
    st.integers(0, 256_000),
    st.integers(0, 2**20),
    st.sampled_from([0, 16384, 32768]),
    st.integers(0, 3),
)
def test_node_round_trip(npus: int, model: str, cpu: int, mem: int, dev_mem: int, group: int):
    devices = tuple(
        Device(f"n-npu{i}", i, model, dev_mem, healthy=i != 1, group=group) for i in range(npus)
    )
    labels = {LABEL_NPU_MODEL: model} if npus else {}
    node = Node("n", cpu, mem, devices, labels)
    back = node_from_object(node_object(node))
    assert back == node
    assert back.labels == node.labels


@given(
    st.integers(0, 96_000),
    st.integers(0, 2**20),
    st.one_of(
        st.tuples(st.integers(1, 8), st.just(0), st.just(0)),
        st.tuples(
            st.just(0), st.integers(1, 100).map(lambda p: p * 10), st.sampled_from([0, 1024, 8192])
        ),
    ),
    st.frozensets(models, max_size=2),
)
def test_pod_round_trip(cpu: int, mem: int, npu: tuple[int, int, int], allowed: frozenset[str]):
    npus, share, share_mem = npu
    req = Request("default/p", cpu, mem, npus, share, share_mem, allowed)
    assert request_from_pod(pod_object(req)) == req


@pytest.mark.parametrize(
    ("req", "problem"),
    [
        (Request("p", share_milli=455), "counts percent"),
        (Request("p", share_milli=500, share_memory_mib=1000), "counts GiB"),
    ],
)
def test_what_a_pod_cannot_ask_is_refused(req: Request, problem: str) -> None:
    with pytest.raises(ObjectError, match=problem):
        pod_object(req)
