"""The admission webhook against the real kube-apiserver of the dev cluster.

``dev-cluster up`` runs and registers the webhook; here kube-apiserver calls it for real:
invalid NPU pods are refused with the webhook's sentence, valid ones get the NPU
toleration and the namespace's pull secret, and pods asking for no NPU are untouched,
even while the webhook is down.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest
from kubernetes.client.rest import ApiException

from e2e.support import Cluster, wait_for
from kubenpu import names
from kubenpu.devcluster import webhook as dev_webhook

pytestmark = pytest.mark.e2e

TEAM = "npu-team"
REGISTRY = "npu-registry.example.com"
DENIED = 'admission webhook "validate.npu.kubenpu.io" denied the request: '


def pod(name: str, limits: dict[str, str], image: str = f"{REGISTRY}/demo/job:1") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image, "resources": {"limits": limits}}],
        },
    }


def kubectl_apply(cluster: Cluster, manifest: dict, namespace: str) -> subprocess.CompletedProcess:
    assert cluster.kubectl_binary
    config = str(cluster.dev.kubeconfig)
    return subprocess.run(
        [cluster.kubectl_binary, "--kubeconfig", config, "-n", namespace, "apply", "-f", "-"],
        input=json.dumps(manifest),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def team(cluster: Cluster) -> str:
    """A namespace whose NPU images come from REGISTRY, pulled with its regsecret."""
    cluster.api.create_namespace(
        {
            "metadata": {
                "name": TEAM,
                "annotations": {
                    names.ANNOTATION_NPU_REGISTRY: REGISTRY,
                    names.ANNOTATION_NPU_REGISTRY_SECRET: "regsecret",
                },
            }
        }
    )
    return TEAM


@pytest.fixture
def team_pods(cluster: Cluster, team: str) -> Iterator[str]:
    """The team namespace, emptied of pods afterwards."""
    yield team
    cluster.api.delete_collection_namespaced_pod(team)
    wait_for(
        f"pods of {team} gone",
        lambda: not cluster.get(cluster.api.list_namespaced_pod, team)["items"],
    )


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (
            {names.RESOURCE_NPU: "0"},
            'container "main": aliyun.com/npu is 0; ask for at least 1 whole NPU, or leave '
            "aliyun.com/npu out",
        ),
        (
            {names.RESOURCE_NPU: "8"},
            'the pod asks for 8 aliyun.com/npu (container "main": 8), but the largest NPU '
            "node, npu-node-2, has 4; it could never be scheduled",
        ),
        (
            {names.RESOURCE_NPU: "1", names.RESOURCE_NPU_CORE: "50"},
            'the pod asks for both aliyun.com/npu (whole NPUs: container "main": 1) and '
            'aliyun.com/npu-core (a share of one NPU: container "main": 50); use one of them',
        ),
    ],
    ids=["zero", "larger-than-any-node", "mixed"],
)
def test_invalid_npu_pod_is_refused_with_the_reason(
    cluster: Cluster, team_pods: str, limits: dict[str, str], message: str
) -> None:
    result = kubectl_apply(cluster, pod("bad", limits), team_pods)
    assert result.returncode == 1
    assert f"{DENIED}{message}" in result.stderr
    assert cluster.pod("bad") is None


def test_valid_npu_pod_gets_toleration_and_pull_secret(cluster: Cluster, team_pods: str) -> None:
    result = kubectl_apply(cluster, pod("good", {names.RESOURCE_NPU: "1"}), team_pods)
    assert result.returncode == 0, result.stderr
    spec = cluster.get(cluster.api.read_namespaced_pod, "good", team_pods)["spec"]
    assert {
        "key": names.TAINT_NPU,
        "operator": "Exists",
        "effect": names.TAINT_NPU_EFFECT,
    } in spec["tolerations"]
    assert spec["imagePullSecrets"] == [{"name": "regsecret"}]
    # A pod naming its own pull secret keeps it.
    own = pod("own-secret", {names.RESOURCE_NPU: "1"})
    own["spec"]["imagePullSecrets"] = [{"name": "mine"}]
    assert kubectl_apply(cluster, own, team_pods).returncode == 0
    spec = cluster.get(cluster.api.read_namespaced_pod, "own-secret", team_pods)["spec"]
    assert spec["imagePullSecrets"] == [{"name": "mine"}]


def test_pods_without_npu_are_untouched_even_with_the_webhook_down(
    clean: Cluster, team_pods: str
) -> None:
    cluster = clean
    result = kubectl_apply(cluster, pod("plain", {"cpu": "100m"}), team_pods)
    assert result.returncode == 0, result.stderr
    spec = cluster.get(cluster.api.read_namespaced_pod, "plain", team_pods)["spec"]
    assert not any(t.get("key") == names.TAINT_NPU for t in spec.get("tolerations", []))
    assert "imagePullSecrets" not in spec

    # failurePolicy Fail refuses NPU pods while the webhook is away; pods asking for no
    # NPU are never sent to it (matchConditions), so they keep being admitted.
    cluster.dev.stop_process(dev_webhook.PROCESS)
    try:
        result = kubectl_apply(cluster, pod("plain-2", {"cpu": "100m"}), team_pods)
        assert result.returncode == 0, result.stderr
        with pytest.raises(ApiException) as info:
            cluster.api.create_namespaced_pod(team_pods, pod("npu-2", {names.RESOURCE_NPU: "1"}))
        message = json.loads(info.value.body)["message"]
        assert 'failed calling webhook "mutate.npu.kubenpu.io"' in message
    finally:
        cluster.dev.start_process(dev_webhook.PROCESS)
    dev_webhook.wait_ready(cluster.dev.paths, cluster.dev.ports.webhook, time.monotonic() + 20)
    result = kubectl_apply(cluster, pod("npu-3", {names.RESOURCE_NPU: "1"}), team_pods)
    assert result.returncode == 0, result.stderr
