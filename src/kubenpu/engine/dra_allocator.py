"""``dra-allocator``: a model of what kube-scheduler v1.37.2 does on its own on a DRA node.

On a node served by ``kubenpu dra-driver`` kube-scheduler's DynamicResources plugin runs
the structured-parameters allocator to choose the devices, and, where the kubenpu extender
does not rate the node (a DRA node whose slice it has not seen scores the same neutral 5
as every other; a scheduler without the extender), its default score plugins choose the
node. This module models both choices as an engine policy, so that the simulator can
replay a trace through them beside ``kubenpu`` (``bench/dra_packing.py``, docs/dra.md
"Which path packs better"). It is a model, read from the Go sources of Kubernetes v1.37.2 (the
``k8s.io/kubernetes`` module and its staging module ``k8s.io/dynamic-resource-allocation``
v0.37.2), not the code itself.

**Which allocator runs.** ``structured/allocator.go: NewAllocator`` takes the first of
``stable``, ``incubating``, ``experimental`` whose ``SupportedFeatures`` cover the enabled
features. The DynamicResources plugin passes its feature gates
(``dynamicresources.go: AllocatorFeatures``); on by default in 1.37
(``pkg/features/kube_features.go``) are DRAAdminAccess, DRAPrioritizedList,
DRAPartitionableDevices, DRADeviceTaints, DRADeviceBindingConditions with
DRAResourceClaimDeviceStatus, DRAConsumableCapacity and DRAFractionalCapacityRange. ``stable``
lacks ConsumableCapacity, so ``incubating`` runs
(``internal/incubating/allocator_incubating.go``).

**Device choice** (what ``select_devices`` models):

- ``Allocator.Allocate`` gathers the node's pools (``pools_incubating.go: GatherPools``,
  sorted by driver and pool name, ``sortPoolsByID``; the slices of a pool by name,
  ``buildPool`` / ``sortSlicesByName``) and calls ``allocateOne``, a depth-first search
  that walks pools, slices and each slice's ``devices`` in their listed order and keeps
  the *first* full solution ("The first full solution is chosen"; there is no device
  scoring). It backtracks only when a later device, request or claim cannot be satisfied
  (constraints such as ``matchAttribute``); the extended-resource claim of an
  ``aliyun.com/npu: N`` pod has one ``ExactCount`` request without constraints, so the
  first solution is the first ``N`` usable devices in slice order.
- A device is usable (``allocateOne``, ``allocateDevice``) when it is not in use
  (``deviceInUse``), matches the class selector, carries no taint the request does not
  tolerate (``taintPreventsAllocation``: kubenpu's driver taints a failed device), and,
  with consumable capacity, when ``CmpRequestOverCapacity`` (``consumable_capacity.go``)
  finds the capacity already consumed plus the request within every capacity of the
  device. A capacity the request does not ask for consumes its request policy's default
  (``calculateConsumedCapacity`` / ``fillEmptyRequest``).
- kubenpu's driver (``dra/slices.py: device_entry``) publishes one slice and one pool per
  node, its devices in the backend's index order (the engine's slot order), each with
  ``allowMultipleAllocations``, ``compute`` 100 (default 100, step 1) and ``memory``
  (default 0, step 1Gi). So a whole-NPU request consumes all the compute and takes only a
  device nothing holds, and a share consumes its compute and the memory it asks for.
  **Whole NPUs**: the lowest-index wholly free devices, with no interconnect-group
  awareness. **A share**: the lowest-index device whose remaining compute and memory hold
  it (first fit), neither the tightest nor the one a packing would choose. Shares are
  taken as asked: the allocator rounds compute up to whole percent (10 milli) and memory
  to whole GiB, and every openb share is whole percent and asks for no NPU memory.

**Node choice** (what ``score`` models): kube-scheduler's default profile
(``pkg/scheduler/apis/config/v1/default_plugins.go: getDefaultPlugins``, with
``applyDynamicResources``). Of its score plugins only two tell the simulator's nodes apart:

- NodeResourcesFit, weight 1, default strategy LeastAllocated over cpu and memory, weight
  1 each (``defaults.go: defaultResourceSpec``; ``least_allocated.go:
  leastResourceScorer``): per resource ``(allocatable - requested) * 100 // allocatable``
  (0 if over), averaged with integer division; ``requested`` counts the pod itself.
- NodeResourcesBalancedAllocation, weight 1, over cpu and memory
  (``balanced_allocation.go: balancedResourceScorer``): with ``f`` the requested fraction
  of each resource (capped at 1), ``balance = trunc((1 - |f_cpu - f_mem| / 2) * 100)``,
  computed with and without the pod, and the score is
  ``50 + (50 + with - without) // 2``; skipped for a pod asking for no CPU and no memory
  (``isBestEffortPod``).
- DynamicResources, weight 2, scores only claims with prioritized-list subrequests
  (``dynamicresources.go: Score`` / ``computeScore``: ``firstAvailable`` requests); the
  extended-resource claim has an ``exactly`` request, so it scores 0 on every node.
- TaintToleration, NodeAffinity, PodTopologySpread, InterPodAffinity and ImageLocality are
  the same on every node of a trace replay (no taints, affinities, spread constraints or
  owners; one image), so they change no choice and are left out.

The score is the sum of the two, halved to the engine's 0..100. kube-scheduler's
``selectHost`` picks uniformly at random among the nodes with the best total; the model
adds a random fraction below the scores' resolution drawn from the engine's seeded
generator each decision, which does the same reproducibly.

**Not modelled**: ``percentageOfNodesToScore`` (the adaptive default scores only part of
a large cluster; the simulator scores every node on both paths, as the live replay does
with ``percentageOfNodesToScore: 100``); the 100m / 200Mi ``NonZeroRequested`` defaults of
pods asking for no CPU or memory (one pod of openb default); claims with several requests,
constraints, CEL selectors beyond the model list, admin access and partitionable devices;
requests that round up under a capacity's ``requestPolicy``. A tainted device is the
engine's unhealthy device (no free capacity). kube-scheduler's tie-break draws afresh each
decision; with the engine's fixed node order instead, openb default seeds 42..44 give
93.89 instead of 93.78.

``dra-devices`` is the allocator's device choice alone (it scores every node 0): as the
first part of a spec such as ``dra-devices+kubenpu`` it gives kubenpu's node choice with
the allocator's devices: a DRA node rated by the extender, whose pick kube-scheduler follows.
"""

from __future__ import annotations

import numpy as np

from kubenpu.engine import fit
from kubenpu.engine.framework import MAX_SCORE, Cycle, Policy
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.model import Request

#: Below the scores' resolution (integers halved: steps of 0.5), so it only breaks ties.
TIE_JITTER = 0.25


def least_allocated(
    cap: np.ndarray, used: np.ndarray, ask: int | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per node: ``(allocatable - requested) * 100 // allocatable`` for one resource (0 when
    the request is over), and whether the resource counts (allocatable > 0)."""
    requested = used + ask
    counts = cap > 0
    safe = np.where(counts, cap, 1)
    fits = counts & (requested <= cap)
    score: np.ndarray = np.where(fits, (safe - requested) * MAX_SCORE // safe, 0)
    return score.astype(np.int64), counts


def least_allocated_score(
    cpu_cap: np.ndarray,
    cpu_used: np.ndarray,
    mem_cap: np.ndarray,
    mem_used: np.ndarray,
    cpu: int,
    mem: int,
) -> np.ndarray:
    """NodeResourcesFit's LeastAllocated over cpu and memory, weight 1 each."""
    cpu_score, cpu_counts = least_allocated(cpu_cap, cpu_used, cpu)
    mem_score, mem_counts = least_allocated(mem_cap, mem_used, mem)
    weights = cpu_counts.astype(np.int64) + mem_counts
    total = cpu_score * cpu_counts + mem_score * mem_counts
    out: np.ndarray = np.where(weights > 0, total // np.maximum(weights, 1), 0)
    return out


def _balance(
    cpu_cap: np.ndarray, cpu_req: np.ndarray, mem_cap: np.ndarray, mem_req: np.ndarray
) -> np.ndarray:
    """``trunc((1 - std) * 100)`` of the requested fractions of cpu and memory."""
    both = (cpu_cap > 0) & (mem_cap > 0)
    f_cpu = np.minimum(cpu_req / np.where(cpu_cap > 0, cpu_cap, 1), 1.0)
    f_mem = np.minimum(mem_req / np.where(mem_cap > 0, mem_cap, 1), 1.0)
    std = np.where(both, np.abs((f_cpu - f_mem) / 2), 0.0)
    out: np.ndarray = np.trunc((1 - std) * MAX_SCORE).astype(np.int64)
    return out


def balanced_allocation_score(
    cpu_cap: np.ndarray,
    cpu_used: np.ndarray,
    mem_cap: np.ndarray,
    mem_used: np.ndarray,
    cpu: int,
    mem: int,
) -> np.ndarray:
    """NodeResourcesBalancedAllocation over cpu and memory: the change of balance the pod
    makes, on 50..100 (0 everywhere for a pod asking for neither, which it skips)."""
    if cpu == 0 and mem == 0:
        return np.zeros(cpu_cap.size, dtype=np.int64)
    with_pod = _balance(cpu_cap, cpu_used + cpu, mem_cap, mem_used + mem)
    without = _balance(cpu_cap, cpu_used, mem_cap, mem_used)
    half = MAX_SCORE // 2
    out: np.ndarray = half + (half + with_pod - without) // 2
    return out


def default_node_scores(state: ClusterState, req: Request, nodes: np.ndarray) -> np.ndarray:
    """kube-scheduler's default score total over ``nodes`` for ``req`` (0..200, integers)."""
    cpu_cap, mem_cap = state.cpu_cap[nodes], state.mem_cap[nodes]
    cpu_used = cpu_cap - state.cpu_free[nodes]
    mem_used = mem_cap - state.mem_free[nodes]
    args = (cpu_cap, cpu_used, mem_cap, mem_used, req.cpu_milli, req.memory_mib)
    total: np.ndarray = least_allocated_score(*args) + balanced_allocation_score(*args)
    return total


def allocator_devices(state: ClusterState, req: Request, node: int) -> tuple[list[int], list[int]]:
    """The allocator's first solution on ``node``: the lowest-index usable devices."""
    if not req.wants_devices:
        return [], []
    slots = np.flatnonzero(fit.device_fit(state, req)[node])
    if req.share_milli:
        return [int(slots[0])], [req.share_milli]
    return [int(j) for j in slots[: req.npus]], [FULL] * req.npus


class DraAllocatorPolicy(Policy):
    """kube-scheduler alone on DRA nodes: default node scoring, the allocator's devices."""

    name = "dra-allocator"

    def score(self, cycle: Cycle) -> np.ndarray:
        total = default_node_scores(cycle.state, cycle.request, cycle.candidates)
        jitter = cycle.rng.random(cycle.candidates.size) * TIE_JITTER
        out: np.ndarray = total / 2 + jitter
        return out

    def select_devices(self, cycle: Cycle, node: int) -> tuple[list[int], list[int]]:
        return allocator_devices(cycle.state, cycle.request, node)


class DraDevicesPolicy(Policy):
    """The allocator's device choice only; every node scores 0 (for ``dra-devices+kubenpu``)."""

    name = "dra-devices"

    def score(self, cycle: Cycle) -> np.ndarray:
        return np.zeros(cycle.candidates.size)

    def select_devices(self, cycle: Cycle, node: int) -> tuple[list[int], list[int]]:
        return allocator_devices(cycle.state, cycle.request, node)


#: Name -> class, for the registry.
DRA_CLASSES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (DraAllocatorPolicy, DraDevicesPolicy)
}
