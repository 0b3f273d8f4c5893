"""The Helm chart installed the way an operator installs it, into a bare real-node cluster.

A dev cluster of its own with nothing of kubenpu running (``addons=False``): two real
kubelets with four mock NPUs each, and the private registry. The test pushes the images
(kubenpu, kube-scheduler, npu-check), creates the pull secret and runs the real ``helm``:

1. ``helm install`` (secondary-scheduler mode, sharing off): the device plugin DaemonSet
   runs as containers, registers with the kubelets (allocatable ``aliyun.com/npu``) and
   publishes each Node's device inventory; the extender, webhook and kube-scheduler run as
   Deployments; the plugin may patch only its own Node's inventory annotation;
2. a pod with ``schedulerName: kubenpu-scheduler`` gets its NPU through the extender;
3. the chart's webhook denies a request no node can satisfy;
4. deleting a device-plugin pod: the DaemonSet replaces it, it registers again, a running
   NPU pod keeps its devices and a new one is admitted;
5. no component (nor helm) logs a secret;
6. ``helm upgrade`` to platform mode with sharing on: the dev cluster's own kube-scheduler
   (a host process) is restarted with the chart's KubeSchedulerConfiguration, calling the
   extender through a NodePort on a node IP, and the seed's unchanged
   ``examples/test-npu-pod.yaml`` completes with its device; nothing of the secondary
   scheduler is left;
7. ``helm uninstall`` leaves no object behind.

The tests run in this order and share the release (each step starts where the previous
left it). Real nodes need root: skipped with the reason without it, a failure under CI.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from deploy.chart import CHART, helm
from deploy.cluster import ApiServer
from e2e.support import MANIFESTS, Cluster, wait_for
from kubernetes import client as k8s

from kubenpu import names
from kubenpu.devcluster import binaries, controlplane, processes
from kubenpu.devcluster import images as dev_images
from kubenpu.devcluster.cluster import WORKLOADS, ClusterSpec, DevCluster, up
from kubenpu.devcluster.registry import SERVER
from realnodes.conftest import require_root

pytestmark = pytest.mark.realnodes

T = TypeVar("T")

RELEASE = "kubenpu"
NAMESPACE = "kubenpu-system"
NPUS_PER_NODE = 4
NPU_NODES = ("npu-node-1", "npu-node-2")
#: Where the images go in the private registry (image.registry of the chart).
REGISTRY_PATH = f"{SERVER}/kubenpu"
NPU_CHECK = f"{SERVER}/demo/npu-check:0.1.0"
#: The seed's pod, applied unchanged in platform mode.
SEED_POD = MANIFESTS / "test-npu-pod.yaml"
SEED_IMAGE = yaml.safe_load(SEED_POD.read_text())["spec"]["containers"][0]["image"]
#: The mock backend's node paths: under /var/lib/kubelet, which is each node's own.
MOCK_DEV_DIR = "/var/lib/kubelet/kubenpu-mock/dev"
MOCK_HEALTH_DIR = "/var/lib/kubelet/kubenpu-mock/health"
EXTENDER_NODE_PORT = 30888
COMPONENT = "app.kubernetes.io/component"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"


class Chart:
    """The session's bare cluster, the release's values and what the tests remember."""

    def __init__(self, dev: DevCluster, values_dir: Path) -> None:
        self.cluster = Cluster(dev)
        self.dev = dev
        self.values_dir = values_dir
        self.helm_output: list[str] = []
        self.scheduler_argv = dev.processes["kube-scheduler"].argv
        creds = dev.registry_credentials()
        assert creds is not None
        self.registry_password = creds["password"]

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self.cluster.kubectl(*args, stdin=stdin)

    def helm(self, *args: str, timeout: float = 120) -> str:
        out = helm(*args, kubeconfig=str(self.dev.kubeconfig), timeout=timeout)
        self.helm_output.append(out)
        return out

    def values_file(self, name: str, values: dict[str, Any]) -> str:
        path = self.values_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        return str(path)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def pods(self, component: str) -> list[dict[str, Any]]:
        selector = f"{COMPONENT}={component},{INSTANCE}"
        return self.get("pods", "-n", NAMESPACE, "-l", selector)["items"]

    def diagnose(self) -> str:
        """What a failed wait shows: every pod, the latest events."""
        pods = self.kubectl("get", "pods", "-A", "-o", "wide")
        events = self.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp")
        return f"{pods}\n{os.linesep.join(events.splitlines()[-25:])}"


def wait(chart: Chart, what: str, probe: Callable[[], T], timeout: float) -> T:
    """Poll ``probe`` until truthy; on timeout fail with the cluster's pods and events."""
    try:
        return wait_for(what, probe, timeout=timeout)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{chart.diagnose()}") from None


def _network_values(dev: DevCluster) -> tuple[str, str]:
    """(a fixed cluster IP for the extender Service, node 1's IP)."""
    plan = dev.network
    assert plan is not None
    # The low end of the range, which the API server keeps for static assignments.
    cluster_ip = str(ipaddress.ip_network(plan.service_cidr)[10])
    return cluster_ip, dev.real_node(NPU_NODES[0]).network.ip


def base_values(dev: DevCluster) -> dict[str, Any]:
    """What an operator of this cluster sets: the private registry and its pull secret,
    the mock backend with node-private paths, and the secondary kube-scheduler (of the
    cluster's version) calling the extender at a fixed cluster IP: pods here have no
    cluster DNS, so the Service's name would not resolve."""
    cluster_ip, _ = _network_values(dev)
    return {
        "image": {
            "registry": REGISTRY_PATH,
            "repository": "kubenpu",
            "tag": dev_images.kubenpu_version(),
        },
        "imagePullSecrets": [{"name": "regsecret"}],
        "devicePlugin": {
            "backend": "mock",
            "sharing": False,
            "mock": {
                "devices": NPUS_PER_NODE,
                "devDir": MOCK_DEV_DIR,
                "healthDir": MOCK_HEALTH_DIR,
            },
        },
        "extender": {"service": {"clusterIP": cluster_ip}},
        "scheduler": {
            "mode": "secondary",
            "image": {
                "registry": REGISTRY_PATH,
                "repository": "kube-scheduler",
                "tag": binaries.KUBERNETES_VERSION,
            },
        },
    }


def platform_values(dev: DevCluster) -> dict[str, Any]:
    """The upgrade: the cluster's own scheduler calls the extender at a NodePort on a node
    IP (it runs on the host, outside every pod network); shares on."""
    _, node_ip = _network_values(dev)
    return {
        "devicePlugin": {"sharing": True},
        "extender": {"service": {"type": "NodePort", "nodePort": EXTENDER_NODE_PORT}},
        "scheduler": {
            "mode": "platform",
            "extender": {"urlPrefix": f"http://{node_ip}:{EXTENDER_NODE_PORT}"},
        },
    }


def _pull_secret(namespace: str, creds: dict[str, str]) -> dict[str, Any]:
    """What ``kubectl create secret docker-registry regsecret ...`` creates, built here so
    that the password is never on a command line (nor in a failure message)."""
    auth = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    config = {
        "auths": {
            creds["server"]: {
                "username": creds["username"],
                "password": creds["password"],
                "auth": auth,
            }
        }
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "regsecret", "namespace": namespace},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def _wait_rolled_out(chart: Chart, timeout: float = 150) -> None:
    """Every workload of the release rolled out (kubectl's own bounded wait)."""
    deadline = time.monotonic() + timeout
    workloads = chart.kubectl(
        "get", "daemonsets,deployments", "-n", NAMESPACE, "-l", INSTANCE, "-o", "name"
    ).split()
    assert workloads
    for workload in workloads:
        left = max(1, int(deadline - time.monotonic()))
        try:
            chart.kubectl("rollout", "status", workload, "-n", NAMESPACE, f"--timeout={left}s")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{chart.diagnose()}") from None


def _registered(chart: Chart, npus: int = NPUS_PER_NODE) -> bool:
    return all(chart.cluster.allocatable_npus(n) == npus for n in NPU_NODES)


@pytest.fixture(scope="module")
def chart() -> Iterator[Chart]:
    """A bare real-node cluster with the release installed (secondary mode, no sharing).

    Module scope: the cluster is down before the other real-node files start theirs, so
    two clusters of real kubelets never share the two cores."""
    require_root()
    pushed = {NPU_CHECK} | {f"{SERVER}/{r}:{t}" for r, t in WORKLOADS.values()}
    assert SEED_IMAGE in pushed, (
        f"examples/test-npu-pod.yaml pulls {SEED_IMAGE}, which the dev cluster's registry "
        f"does not get (cluster.WORKLOADS and this test push {sorted(pushed)})"
    )
    helm("version", "--short")  # builds helm first (or skips, without Go)
    built = {
        b.name.rsplit("/", 1)[-1].split(":", 1)[0]: b
        for b in dev_images.build(("kubenpu", "kube-scheduler", "npu-check"))
    }
    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-chart-"))
    dev = up(
        state_dir,
        ClusterSpec(npu_nodes=len(NPU_NODES), npus_per_node=NPUS_PER_NODE),
        addons=False,
        webhook=False,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="kubenpu-chart-values-") as values_dir:
            chart = Chart(dev, Path(values_dir))
            # A bare cluster: no NPU is advertised until the chart's plugin registers.
            assert _registered(chart, 0)
            dev.push_image(built["kubenpu"].path, "kubenpu/kubenpu", dev_images.kubenpu_version())
            dev.push_image(
                built["kube-scheduler"].path,
                "kubenpu/kube-scheduler",
                binaries.KUBERNETES_VERSION,
            )
            # The tests' own pods run npu-check (up() pushed the examples' images too).
            repository, _, tag = NPU_CHECK.removeprefix(f"{SERVER}/").partition(":")
            dev.push_image(built["npu-check"].path, repository, tag)
            # As the README: the namespace admits the plugin (host paths), then the secret.
            chart.kubectl("create", "namespace", NAMESPACE)
            chart.kubectl(
                "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=privileged"
            )
            creds = dev.registry_credentials()
            assert creds is not None
            for namespace in (NAMESPACE, "default"):
                chart.kubectl("apply", "-f", "-", stdin=json.dumps(_pull_secret(namespace, creds)))
            values = chart.values_file("values", base_values(dev))
            out = chart.helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", values)
            assert "STATUS: deployed" in out, out
            _wait_rolled_out(chart)
            wait(chart, "the plugins' NPUs allocatable", lambda: _registered(chart), 60)
            yield chart
    finally:
        dev.down()


# ---- 1. install ---------------------------------------------------------------------


def test_install_runs_every_component_as_pods_on_the_real_kubelets(chart: Chart) -> None:
    plugins = chart.pods("device-plugin")
    assert sorted(p["spec"]["nodeName"] for p in plugins) == list(NPU_NODES)
    for component in ("device-plugin", "extender", "webhook", "scheduler"):
        pods = chart.pods(component)
        assert pods, component
        for pod in pods:
            assert pod["status"]["phase"] == "Running", (component, pod["status"])
            (status,) = pod["status"]["containerStatuses"]
            assert status["ready"], (component, status)
            assert status["image"].startswith(f"{REGISTRY_PATH}/"), status["image"]
    for plugin in plugins:
        log = chart.kubectl("logs", "-n", NAMESPACE, plugin["metadata"]["name"])
        assert "registered with the kubelet" in log, log
        assert "no Kubernetes API access" not in log, log
    # The inventory on each Node is what the extender places by: the plugin wrote it.
    for name in NPU_NODES:
        node = chart.cluster.node(name)
        inventory = json.loads(node["metadata"]["annotations"][names.ANNOTATION_DEVICE_INVENTORY])
        assert [d["id"] for d in inventory] == [f"npu-{i}" for i in range(NPUS_PER_NODE)]
        assert all(d["healthy"] for d in inventory)
        assert names.RESOURCE_NPU_CORE not in node["status"]["allocatable"]  # sharing off


def test_device_plugin_may_patch_only_its_own_nodes_inventory(chart: Chart) -> None:
    """RBAC grants patch on nodes (it cannot name a node); the chart's admission policy
    narrows it to the inventory annotation of the Node the plugin's pod runs on."""
    sa = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-device-plugin"
    authorizer = ApiServer(chart.dev)
    for verb, resource, allowed in [
        ("list", "pods", True),
        ("patch", "nodes", True),
        ("get", "nodes", False),
        ("watch", "pods", False),
        ("get", "secrets", False),
    ]:
        assert authorizer.can_i(sa, verb, resource) is allowed, (verb, resource)

    (pod,) = [p for p in chart.pods("device-plugin") if p["spec"]["nodeName"] == NPU_NODES[0]]
    # A token bound to that pod, as the kubelet mounts it (it names the pod's node).
    token = chart.kubectl(
        "create",
        "token",
        f"{RELEASE}-device-plugin",
        "-n",
        NAMESPACE,
        "--bound-object-kind=Pod",
        f"--bound-object-name={pod['metadata']['name']}",
        "--duration=10m",
    ).strip()
    config = k8s.Configuration(host=chart.dev.server)
    config.ssl_ca_cert = str(chart.dev.paths.cert("ca"))
    config.api_key = {"authorization": f"Bearer {token}"}
    api = k8s.CoreV1Api(k8s.ApiClient(config))

    def patch(node: str, body: dict[str, Any]) -> str:
        try:
            api.patch_node(
                node,
                body,
                dry_run="All",
                _content_type="application/merge-patch+json",
                _preload_content=False,
                _request_timeout=5,
            )
        except k8s.ApiException as err:
            return f"{err.status} {json.loads(err.body)['message']}"
        return "allowed"

    inventory = {"metadata": {"annotations": {names.ANNOTATION_DEVICE_INVENTORY: "[]"}}}
    assert patch(NPU_NODES[0], inventory) == "allowed"
    denied = patch(NPU_NODES[1], inventory)
    assert denied.startswith("403 ") and "only the Node its pod runs on" in denied, denied
    for body in (
        {"metadata": {"labels": {"x": "y"}}},
        {"metadata": {"annotations": {"x": "y"}}},
        {"spec": {"unschedulable": True}},
    ):
        denied = patch(NPU_NODES[0], body)
        assert denied.startswith("403 ") and "may change only the annotation" in denied, denied

    # And the plugin uses the right for what it is for: a sick device shows in the
    # inventory within a health tick.
    health = chart.dev.real_node(NPU_NODES[0]).kubelet_dir / Path(MOCK_HEALTH_DIR).relative_to(
        "/var/lib/kubelet"
    )
    marker = health / "unhealthy-npu-3"
    marker.touch()
    try:

        def sick() -> bool:
            annotations = chart.cluster.node(NPU_NODES[0])["metadata"]["annotations"]
            inventory = json.loads(annotations[names.ANNOTATION_DEVICE_INVENTORY])
            return [d["id"] for d in inventory if not d["healthy"]] == ["npu-3"]

        wait(chart, "npu-3 unhealthy in the inventory", sick, 15)
    finally:
        marker.unlink()
    wait(chart, "npu-3 healthy again", lambda: not sick(), 15)


# ---- 2. secondary scheduler -----------------------------------------------------------


def _npu_check_pod(
    name: str, npus: int, *, scheduler: str | None = None, sleep: int = 0
) -> dict[str, Any]:
    """A pod shaped like the seed's (private image, regsecret, the placement record in
    $KUBENPU_DEVICES) running npu-check, which reports its devices and exits at once."""
    env = {
        "name": "KUBENPU_DEVICES",
        "valueFrom": {
            "fieldRef": {"fieldPath": f"metadata.annotations['{names.ANNOTATION_DEVICES}']"}
        },
    }
    container: dict[str, Any] = {
        "name": "npu-check",
        "image": NPU_CHECK,
        "env": [env],
        "resources": {"limits": {names.RESOURCE_NPU: str(npus)}},
    }
    if sleep:
        container["args"] = ["--sleep", str(sleep)]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "imagePullSecrets": [{"name": "regsecret"}],
        "containers": [container],
    }
    if scheduler:
        spec["schedulerName"] = scheduler
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _phase(chart: Chart, name: str, *phases: str, timeout: float = 90) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        pod = chart.cluster.pod(name)
        return pod if pod and pod["status"].get("phase") in phases else None

    return wait(chart, f"pod {name} in {phases}", reached, timeout)


def _check_devices(chart: Chart, pod: dict[str, Any], log: str) -> list[str]:
    """The extender's record = the kubelet's allocation = the container's device nodes."""
    recorded = pod["metadata"]["annotations"][names.ANNOTATION_DEVICES].split(",")
    node = pod["spec"]["nodeName"]
    assert chart.dev.kubelet_devices(node)[pod["metadata"]["uid"]] == sorted(recorded)
    seen = sorted(re.findall(r"^device (/dev/mock-npu\d+) 241:\d+$", log, re.MULTILINE))
    assert seen == sorted(f"/dev/mock-npu{d.rsplit('-', 1)[1]}" for d in recorded), log
    assert re.search(r"^ok \d+ device", log, re.MULTILINE), log
    return recorded


def _delete_pods(chart: Chart) -> None:
    chart.kubectl("delete", "pods", "--all", "-n", "default", "--grace-period=1", "--wait=false")
    wait(
        chart,
        "the test pods gone",
        lambda: not chart.get("pods", "-n", "default")["items"],
        60,
    )


def test_secondary_scheduler_places_npu_pods_through_the_extender(chart: Chart) -> None:
    pod = _npu_check_pod("secondary", 1, scheduler="kubenpu-scheduler")
    chart.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    done = _phase(chart, "secondary", "Succeeded", "Failed")
    log = chart.kubectl("logs", "secondary")
    assert done["status"]["phase"] == "Succeeded", log
    _check_devices(chart, done, log)
    assert done["metadata"]["annotations"][names.ANNOTATION_NODE] == done["spec"]["nodeName"]
    # The chart's mutating webhook added the NPU toleration.
    assert {"key": names.TAINT_NPU, "operator": "Exists", "effect": "NoSchedule"} in done["spec"][
        "tolerations"
    ]
    # The default scheduler never saw it: the secondary one bound it through the extender.
    events = chart.get(
        "events", "-n", "default", "--field-selector", "involvedObject.name=secondary"
    )
    scheduled = [e for e in events["items"] if e["reason"] == "Scheduled"]
    assert scheduled and all(
        e.get("reportingComponent") == "kubenpu-scheduler" for e in scheduled
    ), scheduled
    _delete_pods(chart)


# ---- 3. webhook -----------------------------------------------------------------------


def test_the_charts_webhook_denies_an_impossible_request(chart: Chart) -> None:
    too_big = _npu_check_pod("too-big", 2 * NPUS_PER_NODE, scheduler="kubenpu-scheduler")
    with pytest.raises(AssertionError) as denied:
        chart.kubectl("create", "-f", "-", stdin=json.dumps(too_big))
    message = str(denied.value)
    assert 'admission webhook "validate.npu.kubenpu.io" denied the request' in message
    assert f"has {NPUS_PER_NODE}" in message and "could never be scheduled" in message, message
    assert chart.cluster.pod("too-big") is None


# ---- 4. device plugin pod deleted -----------------------------------------------------


def test_deleted_device_plugin_pod_is_replaced_and_registers_again(chart: Chart) -> None:
    long_pod = _npu_check_pod("long-runner", 2, scheduler="kubenpu-scheduler", sleep=300)
    chart.kubectl("apply", "-f", "-", stdin=json.dumps(long_pod))
    running = _phase(chart, "long-runner", "Running")
    node, uid = running["spec"]["nodeName"], running["metadata"]["uid"]
    before = chart.dev.kubelet_devices(node)[uid]
    (old,) = [p for p in chart.pods("device-plugin") if p["spec"]["nodeName"] == node]
    chart.kubectl("delete", "pod", "-n", NAMESPACE, old["metadata"]["name"], "--wait=true")

    def replaced() -> dict[str, Any] | None:
        for pod in chart.pods("device-plugin"):
            statuses = pod["status"].get("containerStatuses", [])
            if (
                pod["spec"]["nodeName"] == node
                and pod["metadata"]["uid"] != old["metadata"]["uid"]
                and statuses
                and statuses[0]["ready"]
            ):
                return pod
        return None

    new = wait(chart, f"a new device-plugin pod on {node}", replaced, 60)
    wait(
        chart,
        "the new plugin registered",
        lambda: (
            "registered with the kubelet"
            in chart.kubectl("logs", "-n", NAMESPACE, new["metadata"]["name"])
        ),
        30,
    )
    wait(chart, f"{node} NPUs allocatable", lambda: _registered(chart), 60)
    # The running pod kept its devices: same checkpoint entry, same device nodes inside.
    again = chart.cluster.pod("long-runner")
    assert again is not None and again["status"]["phase"] == "Running"
    assert again["status"]["containerStatuses"][0]["restartCount"] == 0
    assert chart.dev.kubelet_devices(node)[uid] == before
    inside = chart.kubectl("exec", "long-runner", "--", "ls", "/dev").split()
    assert sorted(d for d in inside if d.startswith("mock-npu")) == sorted(
        f"mock-npu{d.rsplit('-', 1)[1]}" for d in before
    ), inside
    # A new pod on that node is admitted and gets the other two devices.
    other = _npu_check_pod("after-restart", 2, scheduler="kubenpu-scheduler")
    other["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    chart.kubectl("apply", "-f", "-", stdin=json.dumps(other))
    done = _phase(chart, "after-restart", "Succeeded", "Failed")
    log = chart.kubectl("logs", "after-restart")
    assert done["status"]["phase"] == "Succeeded", log
    assert not set(_check_devices(chart, done, log)) & set(before)
    _delete_pods(chart)


# ---- 5. no secret in any log ------------------------------------------------------------


def test_no_component_logs_a_secret(chart: Chart) -> None:
    secret = chart.get("secret", f"{RELEASE}-webhook-tls", "-n", NAMESPACE)["data"]
    key = base64.b64decode(secret["tls.key"]).decode()
    key_body = "".join(line for line in key.splitlines() if "PRIVATE KEY" not in line)[:64]
    forbidden = {
        "the registry password": chart.registry_password,
        "the webhook's private key": key_body,
    }
    logs = {"helm": "\n".join(chart.helm_output)}
    for pod in chart.get("pods", "-n", NAMESPACE, "-l", INSTANCE)["items"]:
        name = pod["metadata"]["name"]
        logs[name] = chart.kubectl("logs", "-n", NAMESPACE, name)
    # helm, and every pod: 2 plugins, the extender, 2 webhooks, the secondary scheduler.
    assert len(logs) == 7, sorted(logs)
    for source, text in logs.items():
        for what, value in forbidden.items():
            assert value not in text, f"{source} logs {what}"
        # No bearer token (a JWT), no PEM key of any kind.
        assert not re.search(r"eyJhbGciOi[A-Za-z0-9_-]{10,}", text), f"{source} logs a token"
        assert "PRIVATE KEY-----" not in text, f"{source} logs a private key"


# ---- 6. upgrade to platform mode --------------------------------------------------------


def _platform_scheduler(chart: Chart) -> Path:
    """Restart the dev cluster's kube-scheduler (a host process) with the chart's
    configuration for the platform's scheduler, as docs/deploy.md tells an operator: the
    rendered ConfigMap's file, plus where this scheduler finds its kubeconfig."""
    text = chart.kubectl(
        "get",
        "configmap",
        f"{RELEASE}-scheduler-config",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.data.config\\.yaml}",
    )
    config = yaml.safe_load(text)
    assert [p["schedulerName"] for p in config["profiles"]] == ["default-scheduler"]
    config["clientConnection"] = {"kubeconfig": str(chart.dev.paths.scheduler_kubeconfig)}
    path = chart.dev.state_dir / "kube-scheduler-platform.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    _restart_scheduler(
        chart,
        controlplane.scheduler_argv(
            binaries.bin_dir() / "kube-scheduler", chart.dev.paths, chart.dev.ports, path
        ),
    )
    return path


def _restart_scheduler(chart: Chart, argv: tuple[str, ...] | list[str]) -> None:
    dev = chart.dev
    old = dev.processes["kube-scheduler"]
    dev.stop_process("kube-scheduler")
    dev.processes["kube-scheduler"] = processes.spawn("kube-scheduler", argv, Path(old.log))
    dev.save()
    controlplane.wait_scheduler_healthy(dev.ports, time.monotonic() + 30)


def test_upgrade_to_platform_mode_places_the_seeds_pod(chart: Chart) -> None:
    secret = f"{RELEASE}-webhook-tls"
    cert_before = chart.get("secret", secret, "-n", NAMESPACE)["data"]
    out = chart.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "-f",
        chart.values_file("values", base_values(chart.dev)),
        "-f",
        chart.values_file("platform", platform_values(chart.dev)),
    )
    assert "STATUS: deployed" in out and "REVISION: 2" in out, out
    _, node_ip = _network_values(chart.dev)
    assert f"The extender is called at http://{node_ip}:{EXTENDER_NODE_PORT}" in out  # NOTES
    _wait_rolled_out(chart)
    wait(
        chart,
        "shares allocatable (sharing on)",
        lambda: all(
            chart.cluster.node(n)["status"]["allocatable"].get(names.RESOURCE_NPU_CORE)
            == str(100 * NPUS_PER_NODE)
            for n in NPU_NODES
        ),
        60,
    )
    wait(chart, "whole NPUs allocatable", lambda: _registered(chart), 30)
    wait(
        chart,
        "the secondary scheduler's pod gone",
        lambda: not chart.pods("scheduler"),
        60,
    )
    # Nothing of the secondary scheduler is left but the configuration for the platform's.
    left = chart.kubectl(
        "get",
        "deployments,pods,serviceaccounts,roles,rolebindings,leases,poddisruptionbudgets,"
        "configmaps,clusterrolebindings",
        "-A",
        "-l",
        f"{COMPONENT}=scheduler,{INSTANCE}",
        "-o",
        "name",
    ).split()
    assert left == [f"configmap/{RELEASE}-scheduler-config"], left
    assert chart.get("secret", secret, "-n", NAMESPACE)["data"] == cert_before

    _platform_scheduler(chart)
    out = chart.kubectl("apply", "-f", str(SEED_POD))
    assert out.strip() == "pod/test-npu-pod created"
    # Bounded by what the seed's workload needs (npu-check: seconds).
    done = _phase(chart, "test-npu-pod", "Succeeded", "Failed", timeout=300)
    log = chart.kubectl("logs", "test-npu-pod")
    assert done["status"]["phase"] == "Succeeded", log
    assert "Completed" in chart.kubectl("get", "po", "test-npu-pod")
    # Placed through the extender: its record is on the pod, and it is what the pod saw.
    (device,) = _check_devices(chart, done, log)
    assert f"record {device}" in log
    assert done["spec"].get("schedulerName", "default-scheduler") == "default-scheduler"
    _delete_pods(chart)


# ---- 7. uninstall ----------------------------------------------------------------------


def test_uninstall_leaves_nothing_behind(chart: Chart) -> None:
    # As an operator must: the platform's scheduler stops calling the extender first (it
    # is not ignorable: NPU pods would wait for it forever).
    _restart_scheduler(chart, chart.scheduler_argv)
    out = chart.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=90s")
    assert f'release "{RELEASE}" uninstalled' in out, out
    resources = ",".join(
        r
        for r in chart.kubectl("api-resources", "--verbs=list", "-o", "name").split()
        # Deprecated aliases of what is listed anyway (and warn on every use).
        if r not in ("componentstatuses", "endpoints", "events")
    )
    wait(
        chart,
        "no object of the release",
        lambda: not chart.kubectl("get", resources, "-A", "-l", INSTANCE, "-o", "name").strip(),
        60,
    )
    assert not chart.get("pods", "-n", NAMESPACE)["items"]
    for kind in (
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "clusterroles",
        "clusterrolebindings",
    ):
        found = chart.kubectl("get", kind, "-o", "name").split()
        ours = re.compile(rf"/{RELEASE}-(device-plugin|extender|webhook|scheduler)")
        assert not [f for f in found if ours.search(f)], found
    # What is not the release's stays: the operator's pull secret, the Nodes (the kubelet
    # keeps the extended resources' capacity, with nothing allocatable once the plugin is
    # gone; the inventory annotation stays until removed, docs/deploy.md).
    assert chart.get("secret", "regsecret", "-n", NAMESPACE)
