"""Gangs as the Workload API spells them (``scheduling.k8s.io/v1beta1``, Kubernetes 1.37).

A pod belongs to a gang when ``spec.schedulingGroup.podGroupName`` names a PodGroup in
its namespace whose ``spec.schedulingPolicy.gang.minCount`` is set (a ``basic`` policy is
no gang). The gang's topology comes from the PodGroup's first
``spec.schedulingConstraints.topology`` key (``require`` that node label's domain), else
from its ``kubenpu.io/gang-topology`` and ``kubenpu.io/gang-group-label`` annotations.
The one reader of both; the extender and the tools call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from kubenpu.engine.gang import Topology
from kubenpu.errors import ObjectError
from kubenpu.names import ANNOTATION_GANG_GROUP_LABEL, ANNOTATION_GANG_TOPOLOGY

#: The API path of the PodGroups (GenericWorkload, beta and off by default in 1.37).
POD_GROUP_API = "scheduling.k8s.io/v1beta1"
_TOPOLOGIES: dict[str, Topology] = {t: t for t in get_args(Topology)}


@dataclass(frozen=True, slots=True)
class GangPolicy:
    """What the extender needs of a PodGroup: how many must start together, and where."""

    #: ``namespace/name`` of the PodGroup.
    group: str
    min_count: int
    topology: Topology = "none"
    #: The node label naming node groups (``None``: groups are not tried, nodes are).
    group_label: str | None = None


def pod_group_of(pod: Mapping[str, Any]) -> str | None:
    """``namespace/podGroupName`` of the pod's scheduling group; None when it has none."""
    spec = pod.get("spec")
    group = spec.get("schedulingGroup") if isinstance(spec, Mapping) else None
    if not isinstance(group, Mapping):
        return None
    name = group.get("podGroupName")
    if not isinstance(name, str) or not name:
        return None
    meta = pod.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, Mapping) else None
    return f"{ns or 'default'}/{name}"


def gang_policy(obj: Mapping[str, Any]) -> GangPolicy | None:
    """A PodGroup object's gang policy; None for a ``basic`` (non-gang) group.

    Raises ``ObjectError`` naming the field for a malformed one.
    """
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name = f"{meta.get('namespace') or 'default'}/{meta.get('name') or ''}"
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise ObjectError(f"podgroup {name}: spec must be an object")
    policy = spec.get("schedulingPolicy") or {}
    gang = policy.get("gang") if isinstance(policy, Mapping) else None
    if gang is None:
        return None
    count = gang.get("minCount") if isinstance(gang, Mapping) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ObjectError(
            f"podgroup {name}: spec.schedulingPolicy.gang.minCount must be a positive "
            f"integer, got {count!r}"
        )
    constraints = spec.get("schedulingConstraints") or {}
    topology = constraints.get("topology") if isinstance(constraints, Mapping) else None
    if isinstance(topology, list) and topology and isinstance(topology[0], Mapping):
        key = topology[0].get("key")
        if isinstance(key, str) and key:
            return GangPolicy(name, count, "require", key)
    annotations = meta.get("annotations") or {}
    wanted = str(annotations.get(ANNOTATION_GANG_TOPOLOGY, "none"))
    chosen = _TOPOLOGIES.get(wanted)
    if chosen is None:
        raise ObjectError(
            f"podgroup {name}: annotation {ANNOTATION_GANG_TOPOLOGY} must be one of "
            f"{', '.join(_TOPOLOGIES)}, got {wanted!r}"
        )
    label = annotations.get(ANNOTATION_GANG_GROUP_LABEL) or None
    return GangPolicy(name, count, chosen, str(label) if label else None)
