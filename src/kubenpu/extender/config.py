"""How kube-scheduler is configured to call the extender, and what the extender may do.

The single definition behind ``deploy/extender/`` (checked by a test) and the dev
cluster's scheduler configuration.
"""

from __future__ import annotations

from typing import Any

from kubenpu.names import RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM

#: Extender weight: its 0..10 score counts weight x 10 per point, so one point between
#: the engine's pick (10) and the next best (<= 9) outweighs what the default score
#: plugins (spreading, least-allocated; weights 1..3, 0..100 each) differ by between nodes.
WEIGHT = 50

#: The resources the extender manages: kube-scheduler only calls it for pods asking for
#: one of them. Not ignoredByScheduler: kube-scheduler's own resource fit still counts
#: them per node (a cheap pre-filter, and the kubelet admits by those counts); the
#: extender adds what counts cannot see: which device, shares, topology, health.
MANAGED_RESOURCES = (RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM)

#: What ``kubenpu scheduler`` needs from the API (least privilege).
RBAC_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["pods/binding"], "verbs": ["create"]},
    # preempt: kube-scheduler's PDB flags for the victims it chooses.
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["list"]},
    # bind on a DRA node: the devices the pod's claims were allocated (kubenpu.io/devices);
    # prioritize: what the claims hold on DRA nodes, and those nodes' NPUs (their slices).
    {
        "apiGroups": ["resource.k8s.io"],
        "resources": ["resourceclaims"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"], "verbs": ["list", "watch"]},
    # gang members' filter: the PodGroup's gang policy (Workload API).
    {"apiGroups": ["scheduling.k8s.io"], "resources": ["podgroups"], "verbs": ["get"]},
]


def extender_entry(url_prefix: str, *, ca_data: str = "", all_pods: bool = False) -> dict[str, Any]:
    """One ``extenders`` entry of a KubeSchedulerConfiguration (``ca_data``: base64 PEM
    of the CA that signed the extender's HTTPS certificate).

    ``all_pods``: no managed resources, so kube-scheduler asks the extender about every
    pod. Pods without NPUs are then placed by the engine too, packed as the policy packs
    them, instead of spread by kube-scheduler's least-allocated scoring over the NPU
    nodes' CPU (which strands their NPUs: on openb, 5 to 8 points of allocation for
    best-fit and FGD, bench/live_replay.py --all-pods). The price: an extender call for
    every pod of the cluster."""
    entry: dict[str, Any] = {
        "urlPrefix": url_prefix,
        "filterVerb": "filter",
        "prioritizeVerb": "prioritize",
        "bindVerb": "bind",
        # Device-aware victims: kube-scheduler's own preemption only counts resources.
        "preemptVerb": "preempt",
        "weight": WEIGHT,
        "enableHTTPS": url_prefix.startswith("https://"),
        "httpTimeout": "5s",
        "nodeCacheCapable": True,
        # Not ignorable: without the extender a shared or topology-bound pod would be
        # placed blind and could be given a device another pod holds.
        "ignorable": False,
    }
    if not all_pods:
        entry["managedResources"] = [
            {"name": r, "ignoredByScheduler": False} for r in MANAGED_RESOURCES
        ]
    if ca_data:
        entry["tlsConfig"] = {"caData": ca_data}
    return entry


def scheduler_configuration(url_prefix: str, kubeconfig: str, **entry: Any) -> dict[str, Any]:
    """A complete KubeSchedulerConfiguration: the default profile plus the extender."""
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig},
        "leaderElection": {"leaderElect": False},
        "extenders": [extender_entry(url_prefix, **entry)],
    }
