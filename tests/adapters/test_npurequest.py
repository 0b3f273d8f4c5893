"""One reader of a pod's NPU request: what the webhook admits, the extender can place.

The drift this guards against: the webhook once checked per container and the extender
per pod, so a pod with one whole-NPU container and one shared container was admitted and
then stayed Pending forever.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kubenpu.adapters.kube import request_from_pod
from kubenpu.adapters.npurequest import read_pod_npu
from kubenpu.errors import ObjectError
from kubenpu.names import RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM
from kubenpu.webhook.admission import validate_pod


def _pod(*containers: dict, init: tuple[dict, ...] = ()) -> dict:
    return {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": list(containers), "initContainers": list(init)},
    }


def _container(name: str, limits: dict) -> dict:
    return {"name": name, "resources": {"limits": limits}}


amounts = st.fixed_dictionaries(
    {},
    optional={
        RESOURCE_NPU: st.sampled_from(["0", "1", "2", "8", "1.5", "-1", "x"]),
        RESOURCE_NPU_CORE: st.sampled_from(["0", "10", "50", "60", "100", "101"]),
        RESOURCE_NPU_MEM: st.sampled_from(["4", "8Gi", "2"]),
    },
)


@given(st.lists(amounts, min_size=1, max_size=3), st.lists(amounts, max_size=2))
def test_admitted_exactly_when_the_extender_can_read_it(mains, inits) -> None:
    pod = _pod(
        *(_container(f"c{i}", a) for i, a in enumerate(mains)),
        init=tuple(_container(f"i{i}", a) for i, a in enumerate(inits)),
    )
    admitted = not validate_pod(pod, None)
    try:
        request = request_from_pod(pod)
    except ObjectError:
        assert not admitted
        return
    assert admitted
    npu = read_pod_npu(pod)
    assert (request.npus, request.share_milli) == (npu.npus, npu.core * 10)
    # A readable request is one the engine can place somewhere: whole NPUs or one share.
    assert not (request.npus and request.share_milli)
    assert request.share_milli <= 1000


def test_the_scheduler_arithmetic_sum_of_containers_or_largest_init() -> None:
    pod = _pod(
        _container("a", {RESOURCE_NPU_CORE: "30"}),
        _container("b", {RESOURCE_NPU_CORE: "40"}),
        init=(_container("setup", {RESOURCE_NPU_CORE: "60"}),),
    )
    npu = read_pod_npu(pod)
    assert (npu.npus, npu.core, npu.problems) == (0, 70, ())
    assert npu.holders(RESOURCE_NPU_CORE) == (
        'init container "setup": 60, container "a": 30, container "b": 40'
    )
    assert [c.amounts for c in npu.containers] == [
        {RESOURCE_NPU_CORE: 60},
        {RESOURCE_NPU_CORE: 30},
        {RESOURCE_NPU_CORE: 40},
    ]


def test_a_pod_without_npus_asks_for_nothing() -> None:
    npu = read_pod_npu(_pod(_container("a", {"cpu": "1"})))
    assert not npu.asks and npu.problems == ()
    assert read_pod_npu(_pod(_container("a", {RESOURCE_NPU: "0"}))).asks
