"""The chart against the real kube-apiserver (and kube-scheduler) of `kubenpu dev-cluster`.

Server-side dry-run apply of every variant, Pod Security admission of the pod templates,
the real kube-scheduler's validation of the scheduler configuration, and one real
install / upgrade / uninstall with RBAC and the webhook registration checked by the API
server itself.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.chart import CHART, NAMESPACE, VARIANTS, find, helm, one, render, values_file
from deploy.cluster import ApiServer, KubectlError
from kubenpu import names
from kubenpu.devcluster import binaries

pytestmark = pytest.mark.e2e

NEEDS_CRDS = {"cert-manager", "service-monitor"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_server_side_dry_run_accepts_every_object(apiserver: ApiServer, variant: str) -> None:
    apiserver.ensure_namespace(NAMESPACE)
    if variant in NEEDS_CRDS:
        apiserver.ensure_stand_in_crds()
    objects = render(VARIANTS[variant])
    lines = apiserver.dry_run_apply(objects)
    assert len(lines) == len(objects), lines
    assert all(line.endswith("serverside-applied (server dry run)") for line in lines), lines


def pod_from(workload: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = copy.deepcopy(workload["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": workload["metadata"]["name"],
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }


def ensure_service_accounts(apiserver: ApiServer, objects: list[dict[str, Any]], ns: str) -> None:
    """The chart's ServiceAccounts in ``ns``: the ServiceAccount admission plugin (on since
    the dev cluster runs kube-controller-manager) refuses a pod whose account is missing."""
    accounts = []
    for sa in find(objects, "ServiceAccount"):
        sa = copy.deepcopy(sa)
        sa["metadata"]["namespace"] = ns
        accounts.append(sa)
    apiserver.kubectl(
        "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(accounts, sort_keys=False)
    )


def test_control_plane_pods_pass_pod_security_restricted(apiserver: ApiServer) -> None:
    """Extender, webhook and secondary scheduler run in a `restricted` namespace."""
    ns = "kubenpu-restricted"
    apiserver.ensure_namespace(ns, {"pod-security.kubernetes.io/enforce": "restricted"})
    ensure_service_accounts(apiserver, render(), ns)
    deployments = find(render(), "Deployment")
    assert len(deployments) == 3
    for deployment in deployments:
        out = apiserver.kubectl(
            "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod_from(deployment, ns))
        )
        assert "created (server dry run)" in out


def test_mock_device_plugin_needs_only_the_host_path(apiserver: ApiServer) -> None:
    """Under `baseline`, the plugin's only violation is the kubelet dir it must mount."""
    ns = "kubenpu-baseline"
    apiserver.ensure_namespace(ns, {"pod-security.kubernetes.io/enforce": "baseline"})
    ensure_service_accounts(apiserver, render(), ns)
    ds = one(render({"devicePlugin": {"backend": "mock"}}), "DaemonSet")
    with pytest.raises(KubectlError) as denied:
        apiserver.kubectl(
            "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod_from(ds, ns))
        )
    message = str(denied.value)
    assert 'violates PodSecurity "baseline:latest": hostPath volumes' in message
    assert '"device-plugins"' in message and "privileged" not in message
    # With real device nodes (mock.devDir): MKNOD is a baseline capability, so again only
    # the host paths.
    mock = {"backend": "mock", "mock": {"devDir": "/var/lib/kubelet/kubenpu-mock/dev"}}
    ds = one(render({"devicePlugin": mock}), "DaemonSet")
    with pytest.raises(KubectlError) as denied:
        apiserver.kubectl(
            "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod_from(ds, ns))
        )
    message = str(denied.value)
    assert '"device-plugins", "mock-dev"' in message, message
    assert "capabilities" not in message and "privileged" not in message, message
    # A real backend is privileged: the namespace must allow it.
    ds = one(render(), "DaemonSet")
    with pytest.raises(KubectlError, match="privileged"):
        apiserver.kubectl(
            "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod_from(ds, ns))
        )


@pytest.mark.parametrize("mode", ["secondary", "platform"])
def test_kube_scheduler_accepts_the_configuration(mode: str, tmp_path: Path) -> None:
    """The real kube-scheduler loads and validates the rendered KubeSchedulerConfiguration."""
    objects = render({"scheduler": {"mode": mode}})
    config = yaml.safe_load(one(objects, "ConfigMap", "scheduler")["data"]["config.yaml"])
    # Only for loading outside a cluster: the in-cluster config needs a pod's token.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    config["clientConnection"] = {"kubeconfig": str(kubeconfig)}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    written = tmp_path / "written.yaml"
    result = subprocess.run(
        [
            str(binaries.ensure_built() / "kube-scheduler"),
            f"--config={tmp_path / 'config.yaml'}",
            f"--write-config-to={written}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = yaml.safe_load(written.read_text())
    (extender,) = loaded["extenders"]
    assert extender["urlPrefix"] == config["extenders"][0]["urlPrefix"]
    assert [p["schedulerName"] for p in loaded["profiles"]] == [
        "kubenpu-scheduler" if mode == "secondary" else "default-scheduler"
    ]
    # ...and rejects a broken one, so the check above means something.
    config["extenders"][0]["weight"] = 0
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            str(binaries.ensure_built() / "kube-scheduler"),
            f"--config={tmp_path / 'config.yaml'}",
            f"--write-config-to={written}.2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "positive weight" in result.stderr


# ---- a real release -----------------------------------------------------------------

LIVE_RELEASE = "npu"
LIVE_NAMESPACE = "kubenpu-live"


def npu_pod(name: str, npus: int) -> dict[str, Any]:
    resources = {"limits": {names.RESOURCE_NPU: str(npus)}} if npus else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "busybox", "resources": resources}]},
    }


def test_install_upgrade_uninstall(apiserver: ApiServer) -> None:
    """helm install/upgrade/uninstall for real: certificates kept, RBAC and webhook live."""
    kubeconfig = apiserver.kubeconfig
    values = {"devicePlugin": {"sharing": True}, "webhook": {"replicas": 1}}
    with tempfile.TemporaryDirectory(prefix="kubenpu-live-") as tmp:
        vf = str(values_file(values, Path(tmp)))
        common = ["--namespace", LIVE_NAMESPACE, "-f", vf]
        out = helm(
            "install",
            LIVE_RELEASE,
            str(CHART),
            "--create-namespace",
            *common,
            kubeconfig=kubeconfig,
        )
        try:
            assert "STATUS: deployed" in out
            assert "schedulerName: kubenpu-scheduler" in out  # NOTES
            secret_name = "npu-kubenpu-webhook-tls"
            before = apiserver.get("secret", secret_name, "-n", LIVE_NAMESPACE)["data"]
            webhook = apiserver.get("validatingwebhookconfiguration", "npu-kubenpu-webhook")
            assert webhook["webhooks"][0]["clientConfig"]["caBundle"] == before["ca.crt"]

            # Before any pod is created: see check_webhook_registration.
            apiserver.kubectl("delete", "service", "npu-kubenpu-webhook", "-n", LIVE_NAMESPACE)
            check_rbac(apiserver)  # (also gives the API server time to see the deletion)
            check_webhook_registration(apiserver)

            out = helm(
                "upgrade",
                LIVE_RELEASE,
                str(CHART),
                *common,
                "--set",
                "logLevel=debug",
                kubeconfig=kubeconfig,
            )
            assert "STATUS: deployed" in out and "REVISION: 2" in out
            after = apiserver.get("secret", secret_name, "-n", LIVE_NAMESPACE)["data"]
            assert after == before, "an upgrade must keep the webhook's CA and certificate"
            webhook = apiserver.get("mutatingwebhookconfiguration", "npu-kubenpu-webhook")
            assert webhook["webhooks"][0]["clientConfig"]["caBundle"] == before["ca.crt"]
            deployment = apiserver.get("deployment", "npu-kubenpu-webhook", "-n", LIVE_NAMESPACE)
            args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            assert "--log-level=debug" in args
        finally:
            helm("uninstall", LIVE_RELEASE, "--namespace", LIVE_NAMESPACE, kubeconfig=kubeconfig)
    left = apiserver.kubectl(
        "get",
        "clusterroles,clusterrolebindings,validatingwebhookconfigurations,"
        "mutatingwebhookconfigurations,validatingadmissionpolicies,"
        "validatingadmissionpolicybindings,all,secrets,configmaps,roles,rolebindings,leases",
        "-A",
        "-l",
        f"app.kubernetes.io/instance={LIVE_RELEASE}",
        "-o",
        "name",
    )
    assert left.strip() == ""


def check_rbac(apiserver: ApiServer) -> None:
    """The API server's own authorizer agrees with the least-privilege table."""

    def sa(component: str) -> str:
        return f"system:serviceaccount:{LIVE_NAMESPACE}:npu-kubenpu-{component}"

    yes = [
        ("device-plugin", "list", "pods", None),
        ("device-plugin", "patch", "nodes", None),
        ("extender", "watch", "nodes", None),
        ("extender", "patch", "pods", "default"),
        ("extender", "create", "pods:binding", "default"),
        ("webhook", "list", "nodes", None),
        ("webhook", "get", "namespaces", None),
        ("scheduler", "create", "pods:binding", "default"),
        ("scheduler", "update", "leases/kubenpu-scheduler", LIVE_NAMESPACE),
    ]
    no = [
        ("device-plugin", "watch", "pods", None),
        ("device-plugin", "get", "nodes", None),
        ("extender", "get", "secrets", "default"),
        ("extender", "delete", "pods", "default"),
        ("extender", "update", "nodes", None),
        ("webhook", "list", "pods", None),
        ("webhook", "get", "secrets", LIVE_NAMESPACE),
        ("webhook", "update", "namespaces", None),
        ("scheduler", "get", "secrets", "default"),
        ("scheduler", "delete", "nodes", None),
        ("scheduler", "update", "leases/other-scheduler", LIVE_NAMESPACE),
    ]
    for component, verb, resource, ns in yes:
        assert apiserver.can_i(sa(component), verb, resource, ns), (component, verb, resource)
    for component, verb, resource, ns in no:
        assert not apiserver.can_i(sa(component), verb, resource, ns), (component, verb, resource)


def check_webhook_registration(apiserver: ApiServer) -> None:
    """Registered for NPU pods only: an NPU pod is sent to the webhook, a pod without NPUs
    is admitted untouched.

    No webhook pod runs here (no controllers), and the API server must never dial a
    Service's cluster IP from this machine: the webhook Service has been deleted first, so a
    call ends at "service not found" inside the API server, before any connection.
    """
    plain = apiserver.kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(npu_pod("plain", 0))
    )
    assert "created (server dry run)" in plain
    with pytest.raises(KubectlError) as failed:
        apiserver.kubectl(
            "create", "--dry-run=server", "-f", "-", stdin=json.dumps(npu_pod("npu", 1))
        )
    message = str(failed.value)
    assert 'failed calling webhook "mutate.npu.kubenpu.io"' in message
    assert 'service "npu-kubenpu-webhook" not found' in message
    # Opted-out namespaces are never sent.
    apiserver.ensure_namespace("opted-out", {"kubenpu.io/admission": "disabled"})
    pod = npu_pod("npu", 1)
    pod["metadata"]["namespace"] = "opted-out"
    out = apiserver.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    assert "created (server dry run)" in out
