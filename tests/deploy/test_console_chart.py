"""The chart's console, Grafana dashboard and PrometheusRule, rendered by the real helm.

- the console is off by default; on, it is a Deployment + Service + ServiceAccount with a
  read-only ClusterRole (get/list/watch nodes, pods, events: kubenpu.console.kubeapi's
  RBAC_RULES exactly) and the restricted security context of the other components;
- every metric name in the dashboard's and the rules' PromQL is a series the code exports
  (the extender's, device plugin's, webhook's and console's registries), and every
  recording rule the dashboard or an alert uses is defined.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from deploy.chart import CHART, NAMESPACE, RELEASE, HelmError, find, helm, one, render, render_text
from deploy.test_rbac import FORBIDDEN_VERBS, SENSITIVE, flatten

ALL_ON = {
    "console": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "serviceMonitor": {"enabled": True},
}
#: PromQL words that are not metric names.
_PROMQL_WORDS = {
    "sum", "by", "without", "rate", "irate", "increase", "histogram_quantile", "min", "max",
    "avg", "count", "le", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "bool", "offset", "label_values", "topk", "bottomk", "abs", "clamp_min",
    "absent", "humanizeDuration",
}  # fmt: skip


def exported_series() -> set[str]:
    """Every series name the code's registries can expose (counters with ``_total``,
    histograms with ``_bucket``/``_sum``/``_count``)."""
    from kubenpu.console.metrics import ConsoleCollector
    from kubenpu.console.store import ConsoleStore
    from kubenpu.deviceplugin.metrics import PluginMetrics
    from kubenpu.extender.metrics import ExtenderMetrics
    from kubenpu.webhook.server import WebhookMetrics

    families = []
    for registry in (
        ExtenderMetrics().registry,
        PluginMetrics().registry,
        WebhookMetrics().registry,
    ):
        families += [(m.name, m.type) for m in registry.collect()]
    families += [(m.name, m.type) for m in ConsoleCollector(ConsoleStore()).describe()]
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    return {name + s for name, kind in families for s in suffixes[kind]}


def metric_names(expr: str) -> set[str]:
    """Identifiers of an expression that name series (not functions, labels or keywords)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r'"[^"]*"', "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words - _PROMQL_WORDS if not w.startswith("$") and not w[0].isdigit()}


def dashboard() -> dict[str, Any]:
    return json.loads((CHART / "dashboards" / "kubenpu-npu.json").read_text())


def dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", var["definition"]))
    return exprs


def rules(values: dict[str, Any]) -> list[dict[str, Any]]:
    (rule,) = find(render(values), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


# ---- off by default ------------------------------------------------------------------


def test_default_render_has_no_console_dashboard_or_rules() -> None:
    objects = render()
    components = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in objects}
    assert not {"console", "dashboard", "rules"} & components
    assert find(objects, "PrometheusRule") == []


def test_lint_strict_with_everything_on(tmp_path) -> None:
    values = tmp_path / "values.json"
    values.write_text(json.dumps(ALL_ON))
    out = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_schema_rejects_console_typos() -> None:
    with pytest.raises(HelmError, match="additional properties 'prot'"):
        render_text({"console": {"prot": 1}})
    with pytest.raises(HelmError, match="simBudgetSeconds"):
        render_text({"console": {"simBudgetSeconds": 0}})


# ---- the console ---------------------------------------------------------------------


def test_console_deployment_service_and_account() -> None:
    objects = render({"console": {"enabled": True, "policy": "fgd"}})
    deploy = one(objects, "Deployment", "console")
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["kubenpu", "console"]
    assert "--address=0.0.0.0" in c["args"] and "--port=8080" in c["args"]
    assert "--policy=fgd" in c["args"] and "--sim-budget=30" in c["args"]
    assert not any(a.startswith("--kubeconfig") for a in c["args"])  # its own in-cluster SA
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"]
    sa = one(objects, "ServiceAccount", "console")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["automountServiceAccountToken"] is False and pod["automountServiceAccountToken"]
    service = one(objects, "Service", "console")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    selector = service["spec"]["selector"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    # No Secret, ConfigMap or volume beyond /tmp: nothing secret reaches the pod.
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert "env" not in c


def test_console_rbac_is_read_only_and_exactly_what_the_code_calls() -> None:
    from kubenpu.console.kubeapi import RBAC_RULES

    objects = render({"console": {"enabled": True}})
    role = one(objects, "ClusterRole", "console")
    granted = flatten(role["rules"])
    assert granted == {
        ("", "nodes"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "events"): {"get", "list", "watch"},
    }
    assert granted == flatten(RBAC_RULES)
    for rule in role["rules"]:
        assert not FORBIDDEN_VERBS & set(rule["verbs"])
        assert not SENSITIVE & set(rule["resources"])
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
    binding = one(objects, "ClusterRoleBinding", "console")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = one(objects, "ServiceAccount", "console")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert (
        find(render({"console": {"enabled": True}, "rbac": {"create": False}}), "ClusterRole") == []
    )


def test_console_service_monitor_only_with_service_monitors() -> None:
    assert find(render({"console": {"enabled": True}}), "ServiceMonitor") == []
    monitors = find(render(ALL_ON), "ServiceMonitor", "console")
    assert len(monitors) == 1
    (endpoint,) = monitors[0]["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == ("http", "/metrics", "http")


# ---- Grafana dashboard ----------------------------------------------------------------


def test_dashboard_configmap_carries_the_sidecar_label_and_the_json() -> None:
    objects = render({"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}})
    (cm,) = find(objects, "ConfigMap", "dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "kubenpu"}
    assert json.loads(cm["data"]["kubenpu-npu.json"]) == dashboard()
    assert find(render(), "ConfigMap", "dashboard") == []


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    dash = dashboard()
    assert dash["uid"] == "kubenpu-npu"
    exprs = " ".join(dashboard_exprs(dash))
    for series in (
        "kubenpu_console_npu_allocated",  # allocation per node and model
        'kubenpu_console_npus{state="free"',  # free NPUs
        "kubenpu_console_device_shares",  # shares per device
        'kubenpu_deviceplugin_devices{resource="aliyun.com/npu", health="Unhealthy"}',
        "kubenpu_extender_latency_seconds_bucket",  # scheduling latency
        "kubenpu_extender_decisions_total",  # outcomes
        'kubenpu_webhook_requests_total{result="denied"}',  # denials
    ):
        assert series in exprs, series
    datasources = {json.dumps(p["datasource"]) for p in dash["panels"] if "datasource" in p}
    assert datasources == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_every_dashboard_metric_is_exported_by_the_code() -> None:
    exported = exported_series()
    recorded = {
        r["record"]
        for r in rules({"prometheusRule": {"enabled": True}, "console": {"enabled": True}})
        if "record" in r
    }
    for expr in dashboard_exprs(dashboard()):
        names = metric_names(expr)
        assert names, expr
        unknown = names - exported - recorded
        assert not unknown, f"{expr}: {sorted(unknown)} not exported by any kubenpu registry"


# ---- PrometheusRule --------------------------------------------------------------------


def test_rules_use_exported_metrics_and_defined_recordings() -> None:
    exported = exported_series()
    all_rules = rules({"prometheusRule": {"enabled": True}, "console": {"enabled": True}})
    recorded = {r["record"] for r in all_rules if "record" in r}
    assert all(r.startswith("kubenpu:") for r in recorded)
    for rule in all_rules:
        unknown = metric_names(str(rule["expr"])) - exported - recorded
        assert not unknown, f"{rule}: {sorted(unknown)}"
    alerts = {r["alert"]: r for r in all_rules if "alert" in r}
    assert {"KubenpuNpuDeviceUnhealthy", "KubenpuNpuPodPendingTooLong"} <= set(alerts)
    assert alerts["KubenpuNpuPodPendingTooLong"]["expr"] == (
        "kubenpu_console_pending_npu_pod_oldest_seconds > 900"
    )
    assert alerts["KubenpuNpuDeviceUnhealthy"]["for"] == "5m"
    # Prometheus' own templating reaches the rule untouched by helm's.
    assert "{{ $labels.pod }}" in alerts["KubenpuNpuDeviceUnhealthy"]["annotations"]["summary"]


def test_console_rules_only_with_the_console() -> None:
    names = {
        r.get("alert") or r.get("record") for r in rules({"prometheusRule": {"enabled": True}})
    }
    assert "KubenpuNpuPodPendingTooLong" not in names
    assert "kubenpu:npu_allocation:ratio" not in names
    assert "KubenpuNpuDeviceUnhealthy" in names


def test_rule_labels_and_release() -> None:
    (rule,) = find(
        render({"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}}),
        "PrometheusRule",
    )
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert rule["metadata"]["namespace"] == NAMESPACE
