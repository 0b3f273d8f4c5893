"""A built-in, deterministic NPU cluster and workload, so the simulator runs with no files.

The cluster is a fleet of reference NPU workers (``ecs.ebman1.26xlarge``: 104 vCPU,
384 GiB, 8 NPUs in two interconnect groups of 4) plus a quarter of smaller 4-NPU nodes.
The workload mixes what production NPU clusters see (shapes after the openb trace): about
half whole single-NPU pods, a third shared-NPU pods at common fractions, a few multi-NPU
training pods (2, 4, 8) and some CPU-only pods. Both are generated from a fixed seed, so
every run of ``kubenpu simulate`` with no files sees the same input.
"""

from __future__ import annotations

import numpy as np

from kubenpu.model import Device, Node, Request
from kubenpu.names import (
    LABEL_INSTANCE_TYPE,
    LABEL_NPU_MODEL,
    REFERENCE_INSTANCE_TYPE,
    REFERENCE_NPU_MODEL,
)

#: Default size of the built-in cluster.
DEFAULT_NODES = 160
#: Default number of pods in the built-in workload.
DEFAULT_PODS = 2000
_SEED = 20231128
_SMALL_MODEL = "hanguang-800s"
_SHARES = np.array([100, 160, 250, 300, 470, 500, 650, 810])
_SHARE_WEIGHTS = np.array([2, 4, 10, 10, 25, 20, 9, 20], dtype=float)


def _node(name: str, cpu: int, mem_gib: int, npus: int, model: str, itype: str) -> Node:
    per_group = max(1, npus // 2)
    devices = tuple(
        Device(id=f"{name}-npu{i}", index=i, model=model, memory_mib=32768, group=i // per_group)
        for i in range(npus)
    )
    labels = {LABEL_NPU_MODEL: model, LABEL_INSTANCE_TYPE: itype}
    return Node(name, cpu * 1000, mem_gib * 1024, devices, labels)


def cluster(num_nodes: int = DEFAULT_NODES, small: bool = True) -> list[Node]:
    """``num_nodes`` nodes: three quarters 8-NPU reference workers, one quarter 4-NPU nodes.

    With ``small=False`` every node is an 8-NPU reference worker (8 x ``num_nodes`` NPUs).
    """
    nodes = []
    for i in range(num_nodes):
        name = f"npu-node-{i:05d}"
        if small and i % 4 == 3:
            nodes.append(_node(name, 48, 192, 4, _SMALL_MODEL, "ecs.ebman1.12xlarge"))
        else:
            nodes.append(_node(name, 104, 384, 8, REFERENCE_NPU_MODEL, REFERENCE_INSTANCE_TYPE))
    return nodes


def workload(num_pods: int = DEFAULT_PODS, seed: int = _SEED) -> list[Request]:
    """``num_pods`` pod requests drawn deterministically from ``seed``."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, size=num_pods, p=[0.48, 0.34, 0.05, 0.13])
    shares = rng.choice(_SHARES, size=num_pods, p=_SHARE_WEIGHTS / _SHARE_WEIGHTS.sum())
    multi = rng.choice([2, 4, 8], size=num_pods, p=[0.45, 0.35, 0.2])
    cpu_per = rng.choice([4, 6, 8, 12, 16], size=num_pods, p=[0.2, 0.2, 0.3, 0.2, 0.1])
    mem_per = rng.choice([16, 24, 32, 48, 64], size=num_pods, p=[0.25, 0.2, 0.3, 0.15, 0.1])
    pinned = rng.random(num_pods) < 0.05
    pods = []
    for i in range(num_pods):
        k = int(kind[i])
        npus = 1 if k == 0 else int(multi[i]) if k == 2 else 0
        share = int(shares[i]) if k == 1 else 0
        scale = max(npus, 1)
        models = frozenset({REFERENCE_NPU_MODEL}) if pinned[i] and k != 3 else frozenset()
        pods.append(
            Request(
                name=f"pod-{i:06d}",
                cpu_milli=int(cpu_per[i]) * 1000 * scale,
                memory_mib=int(mem_per[i]) * 1024 * scale,
                npus=npus,
                share_milli=share,
                models=models,
            )
        )
    return pods
