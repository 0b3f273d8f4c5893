"""The seed's walk-through on real kubelets, to the end: a container runs and completes.

1. the nodes are kubelets v1.37 with containerd 2.x, reached at their InternalIP;
2. the seed's secret and pod (examples/test-npu-pod.yaml, unchanged): the private ResNet-50
   image is pulled, the container sees exactly the device node and env the plugin returned
   for the placement the extender recorded, trains and evaluates on held-out images (top-1
   at least 80 %), the pod completes within 5 minutes and ``kubectl logs`` shows it;
3. two shared pods (examples/shared-npu-pods.yaml) run side by side on one device;
4. without the secret the pull fails with the registry's refusal; a registry other than the
   dev cluster's fails at once, without leaving the machine;
5. ``kubectl exec`` into an NPU pod;
6. a kubelet restart keeps running pods on their devices and admits new ones; deleting the
   device plugin and turning a device unhealthy behave as docs/device-plugin.md promises.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from e2e.support import MANIFESTS, Cluster, wait_for

from kubenpu import names
from kubenpu.devcluster import binaries
from realnodes.conftest import NPU_NODES, NPUS_PER_NODE, npu_check_facts, wait_phase

pytestmark = pytest.mark.realnodes

IMAGE = "npu-registry.example.com/demo/npu-check:0.1.0"


def _pod(
    name: str,
    limits: dict[str, str],
    *,
    secret: bool = True,
    image: str = IMAGE,
    args: tuple[str, ...] = (),
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "main",
                "image": image,
                "args": list(args),
                "env": [
                    {
                        "name": "KUBENPU_DEVICES",
                        "valueFrom": {
                            "fieldRef": {
                                "fieldPath": f"metadata.annotations['{names.ANNOTATION_DEVICES}']"
                            }
                        },
                    }
                ],
                "resources": {"limits": limits},
            }
        ],
    }
    if secret:
        spec["imagePullSecrets"] = [{"name": "regsecret"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_nodes_are_real_kubelets_with_containerd(real: Cluster) -> None:
    nodes = {
        n["metadata"]["name"]: n
        for n in json.loads(real.kubectl("get", "nodes", "-o", "json"))["items"]
    }
    assert sorted(nodes) == list(NPU_NODES)
    network = real.dev.network
    assert network is not None
    for name, node in nodes.items():
        info = node["status"]["nodeInfo"]
        assert info["kubeletVersion"] == binaries.KUBERNETES_VERSION
        assert info[
            "containerRuntimeVersion"
        ] == "containerd://" + binaries.CONTAINERD_VERSION.removeprefix("v")
        addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        assert addresses["InternalIP"] == real.dev.real_node(name).network.ip
        assert node["status"]["allocatable"][names.RESOURCE_NPU] == str(NPUS_PER_NODE)
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True"


#: The seed pod's budget: Completed within 5 minutes of `kubectl apply`, image pull included.
SEED_POD_SECONDS = 300
#: The last line of the ResNet-50 workload (examples/resnet50/train.py).
RESULT_LINE = re.compile(r"^top-1: (?P<top1>\d+\.\d)%  top-5: (?P<top5>\d+\.\d)%  on (?P<on>.+)$")


def test_seed_pod_completes_with_its_device(clean: Cluster, regsecret: str, resnet50: str) -> None:
    real = clean
    assert regsecret.strip() == "secret/regsecret created"
    started = time.monotonic()
    out = real.kubectl("apply", "-f", str(MANIFESTS / "test-npu-pod.yaml"))
    assert out.strip() == "pod/test-npu-pod created"
    pod = wait_phase(real, "test-npu-pod", "Succeeded", "Failed", timeout=SEED_POD_SECONDS)
    took = time.monotonic() - started
    log = real.kubectl("logs", "test-npu-pod")
    assert pod["status"]["phase"] == "Succeeded", log
    assert "Completed" in real.kubectl("get", "po", "test-npu-pod")
    assert pod["spec"]["containers"][0]["image"] == resnet50
    # Trained and evaluated on the held-out split: the log ends with the accuracy line.
    result = RESULT_LINE.match(log.splitlines()[-1])
    assert result, log
    assert float(result["top1"]) >= 80.0, log
    assert result["on"] == "CPU", log  # the mock NPUs are device nodes, not an accelerator
    assert len([line for line in log.splitlines() if line.startswith("epoch ")]) == 5, log
    print(f"test-npu-pod: Succeeded after {took:.0f}s; {log.splitlines()[-1]}")
    # What the extender recorded, what the kubelet gave, what the container saw: one device.
    recorded = pod["metadata"]["annotations"][names.ANNOTATION_DEVICES]
    node = pod["spec"]["nodeName"]
    assert real.dev.kubelet_devices(node)[pod["metadata"]["uid"]] == [recorded]
    index = recorded.rsplit("-", 1)[1]
    facts = npu_check_facts(log)
    assert f"NPU_VISIBLE_DEVICES={index}" in facts["env"], log
    assert [d.split()[0] for d in facts["device"]] == [f"/dev/mock-npu{index}"], log
    assert facts["record"] == [recorded], log
    assert facts["ok"], log


def test_shared_pods_run_side_by_side_on_one_device(clean: Cluster, regsecret: str) -> None:
    real = clean
    real.kubectl("apply", "-f", str(MANIFESTS / "shared-npu-pods.yaml"))
    pods = [
        wait_phase(real, name, "Running", "Succeeded", "Failed")
        for name in ("shared-npu-30", "shared-npu-60")
    ]
    # Both containers run at the same time (each sleeps after printing).
    both = wait_for(
        "both shared pods running",
        lambda: all(
            (real.pod(n) or {}).get("status", {}).get("phase") == "Running"
            for n in ("shared-npu-30", "shared-npu-60")
        ),
        timeout=60,
    )
    assert both
    devices = {p["metadata"]["annotations"][names.ANNOTATION_DEVICES] for p in pods}
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(devices) == 1 and len(nodes) == 1, (devices, nodes)
    (device,) = devices
    index = device.rsplit("-", 1)[1]
    for name in ("shared-npu-30", "shared-npu-60"):
        log = wait_for(f"{name} printed", lambda n=name: real.kubectl("logs", n).strip())
        facts = npu_check_facts(log)
        assert [d.split()[0] for d in facts["device"]] == [f"/dev/mock-npu{index}"], log
        assert facts["ok"], log


def _waiting(real: Cluster, name: str) -> dict[str, str]:
    def waiting() -> dict[str, str] | None:
        pod = real.pod(name) or {}
        for status in pod.get("status", {}).get("containerStatuses", []):
            state = status.get("state", {}).get("waiting", {})
            if state.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                return state
        return None

    return wait_for(f"{name} failing to pull", waiting, timeout=90)


def test_pull_without_the_secret_names_the_refusal(clean: Cluster) -> None:
    real = clean
    real.api.create_namespaced_pod(
        "default", _pod("no-secret", {names.RESOURCE_NPU: "1"}, secret=False)
    )
    state = _waiting(real, "no-secret")
    message = state.get("message", "")
    # containerd's words for the registry's 401 to an anonymous request.
    assert "pull access denied" in message and "authorization failed" in message, state


def test_other_registries_fail_at_once_on_the_machine(clean: Cluster) -> None:
    real = clean
    started = time.monotonic()
    real.api.create_namespaced_pod(
        "default",
        _pod("elsewhere", {names.RESOURCE_NPU: "1"}, image="docker.io/library/busybox:1.36"),
    )
    state = _waiting(real, "elsewhere")
    assert time.monotonic() - started < 60
    assert "127.0.0.1:9" in state.get("message", ""), state


def test_exec_into_an_npu_pod(clean: Cluster, regsecret: str) -> None:
    real = clean
    real.api.create_namespaced_pod(
        "default", _pod("exec-me", {names.RESOURCE_NPU: "2"}, args=("--sleep", "120"))
    )
    wait_phase(real, "exec-me", "Running")
    out = real.kubectl("exec", "exec-me", "--", "ls", "/dev")
    devices = sorted(line for line in out.split() if line.startswith("mock-npu"))
    assert len(devices) == 2, out


def _device_of(real: Cluster, name: str) -> str:
    return real.pod(name)["metadata"]["annotations"][names.ANNOTATION_DEVICES]  # type: ignore[index]


def test_kubelet_restart_keeps_running_pods_and_admits_new(clean: Cluster, regsecret: str) -> None:
    real = clean
    real.api.create_namespaced_pod(
        "default",
        _pod("long-runner", {names.RESOURCE_NPU: "1"}, args=("--sleep", "300")),
    )
    pod = wait_phase(real, "long-runner", "Running")
    node, uid = pod["spec"]["nodeName"], pod["metadata"]["uid"]
    before = real.dev.kubelet_devices(node)[uid]
    real.dev.stop_process(f"kubelet/{node}")
    real.dev.start_process(f"kubelet/{node}")
    wait_for(
        f"{node} Ready with {NPUS_PER_NODE} NPUs again",
        lambda: real.allocatable_npus(node) == NPUS_PER_NODE,
        timeout=90,
    )
    again = real.pod("long-runner")
    assert again is not None and again["status"]["phase"] == "Running"
    assert again["status"]["containerStatuses"][0]["restartCount"] == 0
    assert real.dev.kubelet_devices(node)[uid] == before
    # A new pod on the same node gets another device.
    new = _pod("after-restart", {names.RESOURCE_NPU: "1"})
    new["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    real.api.create_namespaced_pod("default", new)
    done = wait_phase(real, "after-restart", "Succeeded", "Failed")
    assert done["status"]["phase"] == "Succeeded", real.kubectl("logs", "after-restart")
    assert _device_of(real, "after-restart") not in before


def test_device_plugin_restart_and_unhealthy_device(clean: Cluster, regsecret: str) -> None:
    real = clean
    node = NPU_NODES[1]
    real.dev.stop_process(f"device-plugin/{node}")
    real.dev.start_process(f"device-plugin/{node}")
    wait_for(
        f"{node} NPUs back after the plugin restart",
        lambda: real.allocatable_npus(node) == NPUS_PER_NODE,
        timeout=60,
    )
    real.dev.set_device_health(node, "npu-3", healthy=False)
    wait_for(
        f"{node} allocatable down to {NPUS_PER_NODE - 1}",
        lambda: real.allocatable_npus(node) == NPUS_PER_NODE - 1,
        timeout=30,
    )
    # Every healthy device of the node, and none of them the sick one.
    pod = _pod("three", {names.RESOURCE_NPU: str(NPUS_PER_NODE - 1)})
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    real.api.create_namespaced_pod("default", pod)
    done = wait_phase(real, "three", "Succeeded", "Failed")
    log = real.kubectl("logs", "three")
    assert done["status"]["phase"] == "Succeeded", log
    seen = [d.split()[0] for d in npu_check_facts(log)["device"]]
    assert "/dev/mock-npu3" not in seen and len(seen) == NPUS_PER_NODE - 1, log
