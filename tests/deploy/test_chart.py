"""The chart rendered by the real helm: lint, objects, and each component's contract."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
import yaml
from cryptography import x509

from deploy.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    VARIANTS,
    HelmError,
    find,
    helm,
    kinds,
    one,
    render,
    render_text,
    workloads,
)
from kubenpu import names
from kubenpu.devcluster import binaries
from kubenpu.deviceplugin.config import parse_config_text, resolve_config
from kubenpu.extender.config import extender_entry


def container(workload: dict[str, Any]) -> dict[str, Any]:
    """The workload's only container."""
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_strict(variant: str, tmp_path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VARIANTS[variant]))
    out = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_default_render_has_every_component() -> None:
    objects = render()
    assert {k for k, _ in kinds(objects)} == {
        "ConfigMap",
        "DaemonSet",
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "PodDisruptionBudget",
        "Secret",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "Lease",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    deployments = {
        d["metadata"]["labels"]["app.kubernetes.io/component"] for d in find(objects, "Deployment")
    }
    assert deployments == {"extender", "scheduler", "webhook"}
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        cluster_scoped = obj["kind"] in ("ClusterRole", "ClusterRoleBinding") or any(
            word in obj["kind"] for word in ("Webhook", "AdmissionPolicy")
        )
        if cluster_scoped:
            assert "namespace" not in obj["metadata"], obj["metadata"]["name"]
        elif obj["metadata"]["name"].endswith("-scheduler-authentication-reader"):
            # Where the built-in Role of every kube-scheduler lives (test_rbac.py).
            assert obj["metadata"]["namespace"] == "kube-system"
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]


def test_schema_rejects_typos_and_bad_values() -> None:
    with pytest.raises(HelmError, match="additional properties 'polcy'"):
        render_text({"extender": {"polcy": "x"}})
    with pytest.raises(HelmError, match="backend"):
        render_text({"devicePlugin": {"backend": "tpu"}})
    with pytest.raises(HelmError, match="timeoutSeconds"):
        render_text({"webhook": {"timeoutSeconds": 60}})


# ---- device plugin ------------------------------------------------------------------


def test_device_plugin_runs_only_on_npu_nodes_with_the_kubelet_dir() -> None:
    ds = one(render(), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [{"matchExpressions": [{"key": names.LABEL_NPU_MODEL, "operator": "Exists"}]}]
    assert {"key": names.TAINT_NPU, "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    c = container(ds)
    # python3: the dev cluster's Debian-based image has no `python` (test_image.py).
    assert c["command"] == ["python3", "-m", "kubenpu.cli.device_plugin"]
    assert {
        "name": names.ENV_NODE_NAME,
        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
    } in c["env"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    kubelet_dir = "/var/lib/kubelet/device-plugins"
    assert volumes["device-plugins"]["hostPath"] == {"path": kubelet_dir, "type": "Directory"}
    assert mounts["device-plugins"]["mountPath"] == kubelet_dir
    assert pod["priorityClassName"] == "system-node-critical"


def test_device_plugin_node_selection_is_configurable() -> None:
    values = {
        "devicePlugin": {
            "nodeSelector": {names.LABEL_NPU_MODEL: "hanguang-800"},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "pool", "operator": "In", "values": ["a"]}
                                ]
                            }
                        ]
                    }
                }
            },
        }
    }
    pod = one(render(values), "DaemonSet")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {names.LABEL_NPU_MODEL: "hanguang-800"}
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": "pool", "operator": "In", "values": ["a"]},
        {"key": names.LABEL_NPU_MODEL, "operator": "Exists"},
    ]
    pod = one(render({"devicePlugin": {"npuNodeLabel": ""}}), "DaemonSet")["spec"]["template"][
        "spec"
    ]
    assert "affinity" not in pod


@pytest.mark.parametrize(
    ("backend", "privileged"),
    [("auto", True), ("devfs", True), ("ascend", True), ("nvml", True), ("mock", False)],
)
def test_device_plugin_privileged_only_where_the_backend_opens_devices(
    backend: str, privileged: bool
) -> None:
    ds = one(render({"devicePlugin": {"backend": backend}}), "DaemonSet")
    c = container(ds)
    sc = c["securityContext"]
    assert sc["privileged"] is privileged
    assert sc["readOnlyRootFilesystem"] is True
    dev = [m for m in c["volumeMounts"] if m["mountPath"] == "/dev"]
    if privileged:
        assert dev == [{"name": "dev", "mountPath": "/dev", "readOnly": True}]
    else:
        assert dev == []
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
    # Explicit values win over the backend's default.
    override = {"devicePlugin": {"backend": backend, "privileged": not privileged}}
    assert container(one(render(override), "DaemonSet"))["securityContext"]["privileged"] is (
        not privileged
    )


@pytest.mark.parametrize("variant", ["default", "sharing-mock"])
def test_device_plugin_has_its_api_access_with_or_without_sharing(variant: str) -> None:
    """The plugin always runs with its node's name: it reads placement records and
    publishes the Node's device inventory, so its pod mounts a token either way (without
    one the inventory was never published: test_rbac.py, tests/realnodes/test_chart.py)."""
    objects = render(VARIANTS[variant])
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    sa = one(objects, "ServiceAccount", "device-plugin")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True
    assert sa["automountServiceAccountToken"] is False
    assert one(objects, "ClusterRole", "device-plugin")["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]},
    ]
    assert find(objects, "ValidatingAdmissionPolicy", "device-plugin")


def test_mock_backend_dirs_are_node_paths_at_the_same_path(tmp_path) -> None:
    """Real device nodes for the mock backend (test clusters): the node paths are mounted
    where the plugin's DeviceSpecs name them, and creating them needs MKNOD, nothing more."""
    dev, health = "/var/lib/kubelet/kubenpu-mock/dev", "/var/lib/kubelet/kubenpu-mock/health"
    values = {
        "devicePlugin": {
            "backend": "mock",
            "mock": {"devices": 8, "devDir": dev, "healthDir": health},
        }
    }
    objects = render(values)
    ds = one(objects, "DaemonSet")
    c = container(ds)
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    for name, path in (("mock-dev", dev), ("mock-health", health)):
        assert volumes[name]["hostPath"] == {"path": path, "type": "DirectoryOrCreate"}
        assert mounts[name] == path
    assert c["securityContext"]["privileged"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["MKNOD"]}
    text = one(objects, "ConfigMap", "device-plugin")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = resolve_config({}, {names.ENV_NODE_NAME: "n"}, str(path))
    assert (config.mock_devices, config.mock_dev_dir, config.mock_health_dir) == (8, dev, health)
    # Without a devDir: no device nodes, no capability; other backends: no mock keys.
    c = container(one(render({"devicePlugin": {"backend": "mock"}}), "DaemonSet"))
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert not [m for m in c["volumeMounts"] if m["name"].startswith("mock-")]
    text = one(render({"devicePlugin": {"mock": {"devDir": dev}}}), "ConfigMap", "device-plugin")
    assert "mock-" not in text["data"]["config.yaml"]


@pytest.mark.parametrize(
    "values",
    [
        {},
        VARIANTS["sharing-mock"],
        {
            "logLevel": "debug",
            "devicePlugin": {
                "backend": "devfs",
                "metrics": {"port": 0},
                "config": {
                    "devfs-glob": "/dev/alinpu*",
                    "mounts": ["/usr/local/alinpu/lib:/usr/local/alinpu/lib:ro"],
                    "control-devices": ["/dev/alinpu_ctl"],
                    "backend": "ignored: the backend key wins",
                },
            },
        },
    ],
    ids=["default", "sharing-mock", "devfs-config"],
)
def test_device_plugin_config_is_accepted_by_the_plugin(values: dict[str, Any], tmp_path) -> None:
    """The ConfigMap's file goes through the plugin's own config reader unchanged."""
    objects = render(values)
    text = one(objects, "ConfigMap", "device-plugin")["data"]["config.yaml"]
    parse_config_text(text, source="chart")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = resolve_config({}, {names.ENV_NODE_NAME: "npu-node-1"}, str(path))
    dp = values.get("devicePlugin", {})
    assert config.backend == dp.get("backend", "auto")
    assert config.sharing is dp.get("sharing", False)
    assert config.memory_resource is dp.get("memoryResource", False)
    assert config.kubelet_dir == "/var/lib/kubelet/device-plugins"
    assert config.metrics_port == dp.get("metrics", {}).get("port", 9400)
    assert config.log_level == values.get("logLevel", "info")
    assert config.node_name == "npu-node-1"
    args = container(one(objects, "DaemonSet"))["args"]
    assert args[0] == "--config=/etc/kubenpu/device-plugin/config.yaml"
    ports = container(one(objects, "DaemonSet")).get("ports", [])
    assert [p["containerPort"] for p in ports] == (
        [config.metrics_port] if config.metrics_port else []
    )


# ---- scheduler ----------------------------------------------------------------------


def scheduler_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    cm = one(objects, "ConfigMap", "scheduler")
    return yaml.safe_load(cm["data"]["config.yaml"])


def test_all_pods_asks_the_extender_about_every_pod() -> None:
    # Without managed resources kube-scheduler calls the extender for CPU-only pods too.
    objects = render({"scheduler": {"extender": {"allPods": True}}})
    (extender,) = scheduler_config(objects)["extenders"]
    assert "managedResources" not in extender
    assert extender == extender_entry(extender["urlPrefix"], all_pods=True)


def test_secondary_scheduler_calls_the_extender_service() -> None:
    objects = render()
    config = scheduler_config(objects)
    service = one(objects, "Service", "extender")
    port = service["spec"]["ports"][0]["port"]
    (extender,) = config["extenders"]
    url = f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port}"
    # The very entry the extender defines for itself (and the dev cluster uses).
    assert extender == extender_entry(url)
    assert {r["name"] for r in extender["managedResources"]} == {
        names.RESOURCE_NPU,
        names.RESOURCE_NPU_CORE,
        names.RESOURCE_NPU_MEM,
    }
    args = container(one(objects, "Deployment", "extender"))["args"]
    assert "--port=8888" in args and "--address=0.0.0.0" in args
    assert config["profiles"] == [{"schedulerName": "kubenpu-scheduler"}]
    assert config["leaderElection"]["resourceName"] == "kubenpu-scheduler"
    deployment = one(objects, "Deployment", "scheduler")
    assert container(deployment)["command"][:2] == [
        "kube-scheduler",
        "--config=/etc/kubenpu/scheduler/config.yaml",
    ]
    lease_role = one(objects, "Role", "scheduler")
    assert lease_role["rules"][0]["resourceNames"] == ["kubenpu-scheduler"]


def test_secondary_scheduler_matches_the_checked_kubernetes_and_needs_no_dns() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["scheduler"]["image"]["tag"] == binaries.KUBERNETES_VERSION
    # A fixed cluster IP for the extender: the scheduler calls it there, not by name.
    objects = render({"extender": {"service": {"clusterIP": "10.96.0.50"}}})
    assert one(objects, "Service", "extender")["spec"]["clusterIP"] == "10.96.0.50"
    (extender,) = scheduler_config(objects)["extenders"]
    assert extender["urlPrefix"] == "http://10.96.0.50:8888"
    assert "clusterIP" not in one(render(), "Service", "extender")["spec"]


def test_platform_mode_renders_only_the_configuration() -> None:
    objects = render(VARIANTS["platform-scheduler"])
    config = scheduler_config(objects)
    assert config["profiles"] == [{"schedulerName": "default-scheduler"}]
    assert "leaderElection" not in config
    assert find(objects, "Deployment", "scheduler") == []
    assert find(objects, "ClusterRoleBinding", "scheduler") == []
    assert find(objects, "RoleBinding", "scheduler") == []
    assert find(objects, "Lease") == []
    service = one(objects, "Service", "extender")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"][0]["nodePort"] == 30888
    url = "http://10.0.0.5:30888"
    config = scheduler_config(
        render({"scheduler": {"mode": "platform", "extender": {"urlPrefix": url}}})
    )
    assert config["extenders"][0]["urlPrefix"] == url
    assert find(render({"scheduler": {"mode": "none"}}), "ConfigMap", "scheduler") == []


# ---- webhook ------------------------------------------------------------------------


def test_webhook_certificate_is_signed_by_the_ca_bundle_for_the_service() -> None:
    objects = render()
    secret = one(objects, "Secret", "webhook")
    assert secret["type"] == "kubernetes.io/tls"
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    service = one(objects, "Service", "webhook")["metadata"]["name"]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{service}.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        (webhook,) = one(objects, kind)["webhooks"]
        assert webhook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
        assert webhook["clientConfig"]["service"]["name"] == service
    deployment = one(objects, "Deployment", "webhook")
    (tls,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == secret["metadata"]["name"]
    (mount,) = [m for m in container(deployment)["volumeMounts"] if m["name"] == "tls"]
    assert "subPath" not in mount  # a rotated Secret must reach the files


def test_webhook_registration_matches_the_webhook_module() -> None:
    """Rules, selectors and the CEL condition are the ones kubenpu.webhook states."""
    registration = pytest.importorskip("kubenpu.webhook.registration")
    objects = render()
    reference = {
        "ValidatingWebhookConfiguration": registration.validating_configuration("https://x", b"ca"),
        "MutatingWebhookConfiguration": registration.mutating_configuration("https://x", b"ca"),
    }
    for kind, expected_config in reference.items():
        (webhook,) = one(objects, kind)["webhooks"]
        (expected,) = expected_config["webhooks"]
        ignore = {"clientConfig"}
        assert {k: v for k, v in webhook.items() if k not in ignore} == {
            k: v for k, v in expected.items() if k not in ignore
        }
    (validating,) = one(objects, "ValidatingWebhookConfiguration")["webhooks"]
    (mutating,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert (validating["failurePolicy"], mutating["failurePolicy"]) == ("Fail", "Fail")
    objects = render({"webhook": {"mutatingFailurePolicy": "Ignore"}})
    (mutating,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert mutating["failurePolicy"] == "Ignore"


def test_cert_manager_issues_the_certificate_and_injects_the_ca() -> None:
    objects = render(VARIANTS["cert-manager"])
    assert find(objects, "Secret") == []
    certificates = {c["metadata"]["name"]: c for c in find(objects, "Certificate")}
    issuers = {i["metadata"]["name"]: i for i in find(objects, "Issuer")}
    serving = certificates[f"{RELEASE}-webhook"]
    service = one(objects, "Service", "webhook")["metadata"]["name"]
    assert f"{service}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    assert issuers[serving["spec"]["issuerRef"]["name"]]["spec"] == {
        "ca": {"secretName": f"{RELEASE}-webhook-ca"}
    }
    assert certificates[f"{RELEASE}-webhook-ca"]["spec"]["isCA"] is True
    deployment = one(objects, "Deployment", "webhook")
    (tls,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == serving["spec"]["secretName"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        config = one(objects, kind)
        assert config["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{RELEASE}-webhook"
        }
        assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    # An existing issuer: the chart makes no CA of its own.
    objects = render(
        {
            "webhook": {
                "certificate": {
                    "certManager": {
                        "enabled": True,
                        "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"},
                    }
                }
            }
        }
    )
    assert find(objects, "Issuer") == []
    assert one(objects, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }


def test_webhook_off_leaves_no_webhook_objects() -> None:
    objects = render(VARIANTS["webhook-off"])
    assert [
        o
        for o in objects
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "webhook"
    ] == []
    assert find(objects, "ValidatingWebhookConfiguration") == []
    assert find(objects, "Deployment", "extender")


# ---- service monitors, images, security ----------------------------------------------


def test_service_monitors_select_services_and_ports_that_exist() -> None:
    objects = render(VARIANTS["service-monitor"])
    monitors = find(objects, "ServiceMonitor")
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {
        "device-plugin",
        "extender",
        "webhook",
    }
    services = find(objects, "Service")
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "prom"
        selector = monitor["spec"]["selector"]["matchLabels"]
        matching = [
            s
            for s in services
            if selector.items() <= s["metadata"]["labels"].items()
            and selector.items() <= s["spec"]["selector"].items()
        ]
        assert matching, monitor["metadata"]["name"]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert any(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in matching)
    assert find(render(), "ServiceMonitor") == []


def test_image_registry_and_pull_secrets_reach_every_pod() -> None:
    objects = render(VARIANTS["private-registry"])
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regsecret"}], workload["metadata"]["name"]
        image = container(workload)["image"]
        if workload["metadata"]["labels"]["app.kubernetes.io/component"] == "scheduler":
            assert image.startswith("registry.k8s.io/kube-scheduler:")
        else:
            assert image == "registry.example.com/team/kubenpu:0.1.0-rc1"
    for workload in workloads(render()):
        assert "imagePullSecrets" not in workload["spec"]["template"]["spec"]
    digest = "sha256:" + "ab" * 32
    deployment = one(render({"image": {"digest": digest}}), "Deployment", "webhook")
    assert container(deployment)["image"] == f"kubenpu@{digest}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_control_plane_pods_are_restricted(variant: str) -> None:
    """Extender, webhook and scheduler: non-root, read-only root, no capabilities."""
    for deployment in find(render(VARIANTS[variant]), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        sc = container(deployment)["securityContext"]
        assert sc == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert container(deployment)["resources"]["limits"]["memory"]
        # The webhook must never review kubenpu's own pods.
        assert deployment["spec"]["template"]["metadata"]["labels"]["kubenpu.io/admission"] == (
            "disabled"
        )


def test_pod_disruption_budgets_select_their_pods() -> None:
    objects = render()
    for pdb in find(objects, "PodDisruptionBudget"):
        component = pdb["metadata"]["labels"]["app.kubernetes.io/component"]
        deployment = one(objects, "Deployment", component)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    webhook_pdb = one(objects, "PodDisruptionBudget", "webhook")
    assert (
        webhook_pdb["spec"]["minAvailable"]
        < one(objects, "Deployment", "webhook")["spec"]["replicas"]
    )


# ---- DRA driver (draDriver mode) ------------------------------------------------------


def test_dra_driver_mode_is_off_by_default() -> None:
    objects = render()
    assert find(objects, "DaemonSet", "dra-driver") == []
    assert find(objects, "DeviceClass") == []
    # The device plugin keeps its plain rule: nothing about DRA nodes.
    ds = one(objects, "DaemonSet", "device-plugin")
    affinity = ds["spec"]["template"]["spec"]["affinity"]
    assert names.LABEL_NPU_DRIVER not in json.dumps(affinity)


def test_dra_driver_mode_runs_the_driver_on_dra_nodes_and_the_plugin_elsewhere() -> None:
    from kubenpu.dra import api as dra_api
    from kubenpu.dra.deviceclass import device_class

    objects = render(VARIANTS["dra-driver"])
    ds = one(objects, "DaemonSet", "dra-driver")
    pod = ds["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    dra_rule = {"key": names.LABEL_NPU_DRIVER, "operator": "In", "values": [names.NPU_DRIVER_DRA]}
    assert terms == [{"matchExpressions": [dra_rule]}]
    plugin = one(objects, "DaemonSet", "device-plugin")["spec"]["template"]["spec"]
    plugin_terms = plugin["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert plugin_terms == [
        {
            "matchExpressions": [
                {"key": names.LABEL_NPU_MODEL, "operator": "Exists"},
                {
                    "key": names.LABEL_NPU_DRIVER,
                    "operator": "NotIn",
                    "values": [names.NPU_DRIVER_DRA],
                },
            ]
        }
    ]
    assert {"key": names.TAINT_NPU, "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    c = container(ds)
    assert c["command"] == ["python3", "-m", "kubenpu.cli.dra_driver"]
    assert c["args"][:4] == [
        f"--driver={names.DRA_DRIVER}",
        "--backend=auto",
        "--kubelet-dir=/var/lib/kubelet",
        "--cdi-dir=/var/run/cdi",
    ]
    assert {
        "name": names.ENV_NODE_NAME,
        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
    } in c["env"]
    # The kubelet's plugin dirs and the CDI dir, at the paths the kubelet and runtime use.
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    kubelet = dra_api.DEFAULT_KUBELET_DIR
    for name, path in (
        ("plugins", f"{kubelet}/{dra_api.PLUGINS}"),
        ("plugins-registry", f"{kubelet}/{dra_api.PLUGINS_REGISTRY}"),
        ("cdi", "/var/run/cdi"),
    ):
        assert volumes[name] == mounts[name] == path
    assert c["securityContext"]["privileged"] is True  # auto: it opens the device nodes
    assert pod["automountServiceAccountToken"] is True
    # The DeviceClass is the driver's own (kubenpu.dra.deviceclass), extendedResourceName too.
    (klass,) = find(objects, "DeviceClass")
    want = device_class(names.DRA_DRIVER)
    assert klass["metadata"]["name"] == want["metadata"]["name"]
    assert klass["spec"] == want["spec"]
    assert klass["spec"]["extendedResourceName"] == names.RESOURCE_NPU


def test_dra_driver_args_are_the_daemons_own_flags() -> None:
    import subprocess
    import sys

    values = {
        "draDriver": {
            "enabled": True,
            "driverName": "npu.example.com",
            "backend": "mock",
            "kubeletDir": "/data/kubelet/",
            "cdiDir": "/etc/cdi",
            "mock": {"devices": 2, "devDir": "/var/lib/kubelet/mock-dev", "healthDir": ""},
            "deviceClass": {"name": "npu", "extendedResourceName": ""},
        }
    }
    objects = render(values)
    ds = one(objects, "DaemonSet", "dra-driver")
    c = container(ds)
    assert c["args"] == [
        "--driver=npu.example.com",
        "--backend=mock",
        "--kubelet-dir=/data/kubelet",
        "--cdi-dir=/etc/cdi",
        "--log-level=info",
        "--mock-devices=2",
        "--mock-dev-dir=/var/lib/kubelet/mock-dev",
    ]
    helptext = subprocess.run(
        [sys.executable, "-m", "kubenpu.cli.dra_driver", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    ).stdout
    for arg in c["args"]:
        assert arg.split("=", 1)[0] in helptext, arg
    # mock: no /dev, not privileged, MKNOD only for its device nodes.
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["capabilities"] == {"drop": ["ALL"], "add": ["MKNOD"]}
    pod = ds["spec"]["template"]["spec"]
    assert "dev" not in {v["name"] for v in pod["volumes"]}
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert volumes["plugins"] == "/data/kubelet/plugins"
    assert volumes["mock-dev"] == "/var/lib/kubelet/mock-dev"
    (klass,) = find(objects, "DeviceClass")
    assert klass["metadata"]["name"] == "npu"
    assert "extendedResourceName" not in klass["spec"]
    assert (
        'device.driver == "npu.example.com"' in klass["spec"]["selectors"][0]["cel"]["expression"]
    )
    no_class = render({"draDriver": {"enabled": True, "deviceClass": {"create": False}}})
    assert find(no_class, "DeviceClass") == []
    extender = container(one(objects, "Deployment", "extender"))
    assert "--dra-driver=npu.example.com" in extender["args"]
    assert not any(
        a.startswith("--dra-driver")
        for a in container(one(render(), "Deployment", "extender"))["args"]
    )
    with pytest.raises(HelmError, match="driverName"):
        render_text({"draDriver": {"enabled": True, "driverName": "Not_A_DNS_Name"}})
