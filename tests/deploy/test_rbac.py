"""Least privilege, checked on every rendered variant.

Each component's rules are stated here exactly, so that widening one is a deliberate
change to this table (with the API call that needs it), never a side effect.
"""

from __future__ import annotations

from typing import Any

import pytest

from deploy.chart import NAMESPACE, VARIANTS, find, render
from kubenpu import names

#: (apiGroup, resource) -> verbs, per component; what each one's code calls.
EXPECTED_RULES: dict[str, dict[tuple[str, str], set[str]]] = {
    # Sharing or not: the plugin runs with its node's name (NODE_NAME), so it
    # - lists the node's pending pods: their placement records say which devices the
    #   extender chose, for whole devices (GetPreferredAllocation) as for shares
    #   (kubenpu.deviceplugin.sharing.kubernetes_pod_lookup: one list, field selector);
    # - patches its Node: one merge patch of the device-inventory annotation, at start
    #   and on every health change (kubenpu.deviceplugin.inventory). No get: a merge
    #   patch needs none. Without these the extender places on made-up device ids, knows
    #   no health, and the plugin hands the kubelet devices of its own choosing; the
    #   real-node test (tests/realnodes/test_chart.py) shows the grants suffice.
    # RBAC cannot restrict patch to the plugin's own Node: the chart's
    # ValidatingAdmissionPolicy does (test_device_plugin_patches_only_its_own_node).
    "device-plugin": {("", "pods"): {"list"}, ("", "nodes"): {"patch"}},
    # watch-fed cache of nodes and pods, the placement patch, the Binding, and the PDBs
    # preempt reads (kubenpu.extender.config.RBAC_RULES, compared below).
    "extender": {
        ("", "nodes"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch", "patch"},
        ("", "pods/binding"): {"create"},
        ("policy", "poddisruptionbudgets"): {"list"},
        # bind on a DRA node reads the pod's claims (kubenpu.io/devices from their
        # allocation: kubenpu.extender.binder); prioritize rates DRA nodes from their
        # slices and the claims' allocations (kubenpu.extender.cache).
        ("resource.k8s.io", "resourceclaims"): {"get", "list", "watch"},
        ("resource.k8s.io", "resourceslices"): {"list", "watch"},
        # gang members' filter reads their PodGroup's policy (kubenpu.extender.gangs).
        ("scheduling.k8s.io", "podgroups"): {"get"},
    },
    # draDriver mode: the node's one ResourceSlice kept as it should be (list by node,
    # create, update, delete stale ones: kubenpu.dra.kubeapi.SlicePublisher), the claims it
    # prepares (get_claim) and its Node, the slice's owner (node_owner).
    "dra-driver": {
        ("resource.k8s.io", "resourceslices"): {
            "get",
            "list",
            "watch",
            "create",
            "update",
            "delete",
        },
        ("resource.k8s.io", "resourceclaims"): {"get"},
        ("", "nodes"): {"get"},
    },
    # the largest NPU node and the namespace's registry annotations
    # (kubenpu.webhook.lookups: list_node, read_namespace).
    "webhook": {("", "nodes"): {"list"}, ("", "namespaces"): {"get"}},
}
#: Built-in roles the secondary kube-scheduler is bound to (the platform scheduler's own).
SCHEDULER_CLUSTER_ROLES = {"system:kube-scheduler", "system:volume-scheduler"}
#: ...and the built-in Role in kube-system every kube-scheduler reads its client CA with
#: (one ConfigMap, extension-apiserver-authentication, read only).
SCHEDULER_KUBE_SYSTEM_ROLES = {"extension-apiserver-authentication-reader"}
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate", "delete", "deletecollection"}
SENSITIVE = {"secrets", "serviceaccounts/token", "certificatesigningrequests", "*"}
#: The one delete granted: the DRA driver removes stale ResourceSlices of its own node
#: (kubenpu.dra.slices.stale_slices), as the kubelet-side DRA helpers of every driver do.
ALLOWED_DELETES = {("dra-driver", "resourceslices")}


def flatten(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_wildcards_no_secrets_no_escalation(variant: str) -> None:
    objects = render(VARIANTS[variant])
    roles = find(objects, "ClusterRole") + find(objects, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            where = f"{role['kind']} {role['metadata']['name']}: {rule}"
            assert "*" not in rule.get("apiGroups", []), where
            assert not SENSITIVE & set(rule.get("resources", [])), where
            forbidden = FORBIDDEN_VERBS
            component = role["metadata"]["labels"]["app.kubernetes.io/component"]
            if {(component, r) for r in rule.get("resources", [])} <= ALLOWED_DELETES:
                forbidden = FORBIDDEN_VERBS - {"delete"}
            assert not forbidden & set(rule["verbs"]), where
            assert "nonResourceURLs" not in rule, where


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_component_gets_exactly_its_rules(variant: str) -> None:
    objects = render(VARIANTS[variant])
    for role in find(objects, "ClusterRole"):
        component = role["metadata"]["labels"]["app.kubernetes.io/component"]
        assert flatten(role["rules"]) == EXPECTED_RULES[component], role["metadata"]["name"]
        # No rule is narrowed by resourceNames that could silently widen later.
        assert all("resourceNames" not in r for r in role["rules"])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_bindings_bind_chart_service_accounts_only(variant: str) -> None:
    objects = render(VARIANTS[variant])
    accounts = {(NAMESPACE, sa["metadata"]["name"]): sa for sa in find(objects, "ServiceAccount")}
    own_roles = {
        r["metadata"]["name"] for r in find(objects, "ClusterRole") + find(objects, "Role")
    }
    for binding in find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding"):
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert (subject["namespace"], subject["name"]) in accounts, binding["metadata"]["name"]
        role = binding["roleRef"]["name"]
        component = binding["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "scheduler" and binding["kind"] == "ClusterRoleBinding":
            assert role in SCHEDULER_CLUSTER_ROLES
        elif component == "scheduler" and binding["metadata"]["namespace"] == "kube-system":
            assert binding["kind"] == "RoleBinding" and role in SCHEDULER_KUBE_SYSTEM_ROLES
        else:
            assert role in own_roles, binding["metadata"]["name"]
    for sa in accounts.values():
        # Tokens are mounted only by the pods that use the API (automount on the pod).
        assert sa["automountServiceAccountToken"] is False


def test_extender_rules_are_the_extenders_own() -> None:
    from kubenpu.extender.config import RBAC_RULES

    (role,) = find(render(), "ClusterRole", "extender")
    assert flatten(role["rules"]) == flatten(RBAC_RULES)


def test_scheduler_lease_role_is_limited_to_its_own_lease() -> None:
    """The chart creates the Lease, so the scheduler needs no create (which RBAC cannot
    narrow to one name), and upgrade or uninstall removes it with the release."""
    objects = render()
    (role,) = find(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["kubenpu-scheduler"],
            "verbs": ["get", "update"],
        },
    ]
    (lease,) = find(objects, "Lease")
    assert (lease["metadata"]["namespace"], lease["metadata"]["name"]) == (
        NAMESPACE,
        "kubenpu-scheduler",
    )
    assert lease["spec"] == {}  # free: the first scheduler takes it
    assert find(render({"scheduler": {"leaderElect": False}}), "Lease") == []


def _policy(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (policy,) = find(objects, "ValidatingAdmissionPolicy", "device-plugin")
    (binding,) = find(objects, "ValidatingAdmissionPolicyBinding", "device-plugin")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    return policy


def test_device_plugin_patches_only_its_own_node() -> None:
    """What RBAC cannot say: patch only the Node the pod runs on, only the inventory.

    The policy applies to the plugin's account alone and to Node updates (a patch is one);
    its CEL is compiled by the API server in test_apiserver and enforced on real nodes in
    tests/realnodes/test_chart.py (other node, labels, other annotations, spec: denied).
    """
    objects = render()
    policy = _policy(objects)
    (sa,) = find(objects, "ServiceAccount", "device-plugin")
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"], "resources": ["nodes"]}
    ]
    (condition,) = spec["matchConditions"]
    assert condition["expression"] == (
        f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:{sa['metadata']['name']}'"
    )
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert (
        "request.userInfo.extra['authentication.kubernetes.io/node-name'][0]"
        in (variables["nodeName"])
    )
    checks = " ".join(v["expression"] for v in spec["validations"])
    assert "variables.nodeName == object.metadata.name" in checks
    assert "object.spec == oldObject.spec" in checks
    assert f"'{names.ANNOTATION_DEVICE_INVENTORY}'" in checks
    off = render({"devicePlugin": {"nodeRestriction": False}})
    assert find(off, "ValidatingAdmissionPolicy") == []
    assert find(off, "ValidatingAdmissionPolicyBinding") == []


def test_rbac_create_false_renders_no_rbac() -> None:
    objects = render({"rbac": {"create": False}})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert find(objects, kind) == []
