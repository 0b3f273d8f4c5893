"""Every PromQL expression of the chart's Grafana dashboard and PrometheusRule, evaluated by
a real Prometheus (Debian's package, /usr/bin/prometheus, run here on a loopback port with a
generated config and a temporary data dir; the system service is never used) scraping a
dev cluster's kubenpu components every second:

- the extender (``kubenpu scheduler``, plain HTTP), the admission webhook (HTTPS, verified
  against the cluster CA), the node's device plugin (``--metrics-address 127.0.0.1``) as
  ``DevCluster.metrics_endpoints()`` lists them, and ``kubenpu console``'s ``/metrics``;
  each target carries the ``namespace``/``pod`` labels the Prometheus Operator would give
  it, which the rules and panels group by;
- the rules are the chart's, rendered by helm with the console on, loaded as Prometheus'
  rule file (evaluated every second);
- what the series count happens while Prometheus scrapes: the seed's pod and two shares are
  placed, a pod that cannot fit waits, the webhook denies a pod (server-side dry run), a
  device is marked unhealthy;
- each dashboard query, with ``$model`` and ``$node`` set to what its variable query
  returns (and once more to ``.*``, Grafana's "All"), and ``$__rate_interval`` as 1m, must
  return a non-empty result with a finite value and the labels it groups by; the stat
  panels also the values the cluster has;
- each recording rule's expression and recorded series return data; the alert
  ``KubenpuNpuDeviceUnhealthy`` returns data because a device is made unhealthy, and
  Prometheus holds it pending (``for: 5m``); the two alerts whose condition does not happen
  here (``KubenpuExtenderNotReady``: the extender is ready; ``KubenpuNpuPodPendingTooLong``:
  nothing waited 15 minutes) must return nothing, and their inner series (the left side of
  the comparison) must return data.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy.chart import CHART, find, render

from console.cluster import EXAMPLES, Setup, wait_for
from console.server import free_port, get

pytestmark = pytest.mark.e2e

PROMETHEUS = Path("/usr/bin/prometheus")
NAMESPACE = "kubenpu-system"
#: What Grafana's $__rate_interval is replaced with.
RATE_INTERVAL = "1m"
#: Alerts whose condition this small cluster does not reach (see the module docstring).
QUIET_ALERTS = {"KubenpuExtenderNotReady", "KubenpuNpuPodPendingTooLong"}
#: Stat panels -> the value the cluster shows once everything below has happened: the
#: seed's pod (1 NPU), shares of 30% and 60% on one device, a device unhealthy, a pod
#: waiting; 4 NPUs.
STAT_VALUES = {
    "NPU allocation": 1.9 / 4,
    "Free NPUs": 1,
    "Unhealthy NPUs": 1,
    "Pending NPU pods": 1,
}


class Prometheus:
    """A Prometheus process and its HTTP API."""

    def __init__(self, root: Path, config: dict[str, Any], rules: list[dict[str, Any]]) -> None:
        self.root = root
        (root / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}, sort_keys=False))
        config = {**config, "rule_files": [str(root / "rules.yaml")]}
        (root / "prometheus.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        check = subprocess.run(
            [str(PROMETHEUS.parent / "promtool"), "check", "config", str(root / "prometheus.yaml")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (root / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={root / 'prometheus.yaml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.tail()
        try:
            return get(self.base + "/-/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        status, _, body = get(f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (path, params, body[:500])
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` returns now (a scalar as one unlabelled sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def tail(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.root / "prometheus.log").read_text()[-3000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def scrape_configs(setup: Setup) -> list[dict[str, Any]]:
    """One job per component, labelled as the Prometheus Operator would label its pods."""
    jobs = []
    targets = {**setup.dev.metrics_endpoints(), "console": setup.base + "/metrics"}
    assert {"kubenpu-scheduler", "webhook", f"device-plugin/{setup.node}"} <= set(targets), targets
    for name, url in targets.items():
        parsed = urllib.parse.urlsplit(url)
        job: dict[str, Any] = {
            "job_name": name.split("/")[0],
            "scheme": parsed.scheme,
            "metrics_path": parsed.path,
            "static_configs": [
                {
                    "targets": [parsed.netloc],
                    "labels": {"namespace": NAMESPACE, "pod": name.replace("/", "-")},
                }
            ],
        }
        if parsed.scheme == "https":
            job["tls_config"] = {"ca_file": str(setup.dev.paths.cert("ca"))}
        jobs.append(job)
    return jobs


def chart_rules() -> list[dict[str, Any]]:
    """The PrometheusRule's groups as the chart renders them (console on)."""
    (rule,) = find(
        render({"prometheusRule": {"enabled": True}, "console": {"enabled": True}}),
        "PrometheusRule",
    )
    return list(rule["spec"]["groups"])


def dashboard() -> dict[str, Any]:
    return json.loads((CHART / "dashboards" / "kubenpu-npu.json").read_text())


@pytest.fixture(scope="module")
def prometheus(setup: Setup) -> Iterator[Prometheus]:
    assert PROMETHEUS.exists(), "run `bash hack/install-test-tools.sh` as root (prometheus)"
    root = Path(tempfile.mkdtemp(prefix="kubenpu-prometheus-"))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": scrape_configs(setup),
    }
    prom = Prometheus(root, config, chart_rules())
    try:
        wait_for("prometheus ready", prom.ready, timeout=30, interval=0.2)
        yield prom
    finally:
        prom.stop()
        print(f"prometheus in {root}:\n{prom.tail()}")
        shutil.rmtree(root, ignore_errors=True)  # its TSDB and log: nothing left behind


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def _grouped_by(expr: str) -> set[str]:
    """The labels the outermost ``by (...)`` keeps (``le`` is folded by a quantile)."""
    match = re.search(r"\bby\s*\(([^)]*)\)", expr)
    return {w.strip() for w in match.group(1).split(",")} - {"le"} if match else set()


def _has_data(prom: Prometheus, expr: str) -> list[dict[str, Any]] | None:
    result = prom.query(expr)
    return result if result and _finite(result) else None


def test_every_dashboard_and_rule_expression_returns_data(
    setup: Setup, prometheus: Prometheus
) -> None:
    prom = prometheus

    # Every component scraped.
    def all_up() -> bool:
        up = prom.query("up")
        return len(up) == 4 and all(r["value"][1] == "1" for r in up)

    wait_for("every target up", all_up, timeout=30, interval=0.5)
    jobs = {r["metric"]["job"] for r in prom.query("up")}
    assert jobs == {"kubenpu-scheduler", "webhook", "device-plugin", "console"}

    report: list[str] = []

    def note(what: str, expr: str, result: list[dict[str, Any]]) -> None:
        values = sorted({f"{float(r['value'][1]):.4g}" for r in result})
        report.append(f"{what}\n    {expr}\n    -> {len(result)} series, values {values}")

    # What the series count, while Prometheus scrapes. Prometheus takes a series' first
    # sample as its start, not as an increase from 0: each kind of call the rate panels
    # count happens once more after Prometheus has seen its series.
    def scraped(expr: str) -> Any:
        return wait_for(f"{expr} scraped", lambda: _has_data(prom, expr), timeout=30, interval=0.2)

    setup.kubectl("apply", "-f", str(EXAMPLES / "test-npu-pod.yaml"))
    whole = setup.device_of("test-npu-pod")
    scraped('kubenpu_extender_latency_seconds_count{verb="bind"}')
    setup.kubectl("apply", "-f", str(EXAMPLES / "shared-npu-pods.yaml"))
    shared = setup.device_of("shared-npu-30")
    assert setup.device_of("shared-npu-60") == shared != whole
    denied = setup.run_npu_pod("no-npus", 0, "--dry-run=server", check=False)
    assert "denied" in denied, denied
    sick = next(d for d in setup.inventory() if d not in (whole, shared))
    setup.dev.set_device_health(setup.node, sick, healthy=False)
    scraped('kubenpu_console_npus{state="unhealthy"} == 1')
    wait_for(
        "the node's allocatable NPUs to drop to 3",
        lambda: (
            setup.kubectl(
                "get", "node", setup.node, "-o", "jsonpath={.status.allocatable.aliyun\\.com/npu}"
            ).strip()
            == "3"
        ),
        timeout=30,
    )
    # 2 whole NPUs: kube-scheduler sees 2 of the 3 allocatable free, the extender only 1
    # whole healthy device (one is shared): its filter turns the pod down, twice.
    setup.run_npu_pod("too-big", 2)
    scraped('kubenpu_extender_failures_total{verb="filter"}')
    setup.kubectl("delete", "pod", "too-big", "--wait=true")
    setup.run_npu_pod("too-big", 2)
    scraped("kubenpu_console_pending_npu_pods == 1")

    # ---- the dashboard ----------------------------------------------------------------
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"] if v["type"] == "query"}
    values: dict[str, str] = {}
    for name in ("model", "node"):  # in order: $node's query uses $model
        definition = variables[name]["definition"]
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", definition)
        assert match, definition
        series, label = match.group(1), match.group(2)
        for var, value in values.items():
            series = series.replace(f"${var}", value)
        found = wait_for(
            f"${name}'s values",
            lambda series=series, label=label: prom.api(
                f"label/{label}/values", **{"match[]": series}
            ),
            timeout=30,
            interval=0.5,
        )
        # As Grafana joins a multi-value variable into a regex (these need no escaping).
        assert all(re.fullmatch(r"[\w.-]+", v) for v in found), found
        values[name] = "|".join(found)
    assert values == {"model": "hanguang-800", "node": setup.node}

    panels = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    assert len(panels) >= 20
    for substitution in (values, {"model": ".*", "node": ".*"}):
        for title, template in panels:
            expr = template.replace("$__rate_interval", RATE_INTERVAL)
            for var, value in substitution.items():
                expr = expr.replace(f"${var}", value)
            assert "$" not in expr, expr
            want = STAT_VALUES.get(title)

            def shown(expr: str = expr, want: float | None = want) -> Any:
                result = _has_data(prom, expr)
                if result and want is not None:
                    (only,) = result
                    return result if float(only["value"][1]) == pytest.approx(want) else None
                return result

            result = wait_for(f"panel {title!r}: {expr}", shown, timeout=30, interval=0.5)
            note(f"panel {title!r}", expr, result)
            for r in result:
                missing = _grouped_by(expr) - set(r["metric"])
                assert not missing, (title, expr, r)

    # Panels that name a device, a node or a pod name the right ones.
    shares = {r["metric"]["device"]: float(r["value"][1]) for r in prom.query(
        f'kubenpu_console_device_shares{{node="{setup.node}"}} > 0'
    )}  # fmt: skip
    assert shares == {shared: 2.0}
    unhealthy = prom.query(
        'sum by (namespace, pod) (kubenpu_deviceplugin_devices{resource="aliyun.com/npu", '
        'health="Unhealthy"})'
    )
    assert [(r["metric"], r["value"][1]) for r in unhealthy] == [
        ({"namespace": NAMESPACE, "pod": f"device-plugin-{setup.node}"}, "1")
    ]

    # ---- the rules --------------------------------------------------------------------
    rules = [r for group in chart_rules() for r in group["rules"]]
    assert {r.get("alert") for r in rules} >= QUIET_ALERTS | {"KubenpuNpuDeviceUnhealthy"}
    for rule in rules:
        expr = str(rule["expr"])
        if "record" in rule:
            result = wait_for(
                f"rule {rule['record']}: {expr}", lambda e=expr: _has_data(prom, e), timeout=30
            )
            note(f"recording rule {rule['record']}", expr, result)
            result = wait_for(
                f"the recorded series {rule['record']}",
                lambda r=rule["record"]: _has_data(prom, r),
                timeout=30,
            )
            note("  as recorded by Prometheus", rule["record"], result)
        elif rule["alert"] in QUIET_ALERTS:
            assert prom.query(expr) == [], (rule["alert"], expr)
            note(f"alert {rule['alert']} (its condition does not happen here)", expr, [])
            match = re.fullmatch(r"(.*?)\s*(==|!=|>=|<=|>|<)\s*[0-9.]+", expr)
            assert match, expr
            inner = match.group(1)
            result = wait_for(
                f"{rule['alert']}'s series {inner}",
                lambda e=inner: _has_data(prom, e),
                timeout=30,
            )
            note("  its inner series", inner, result)
        else:
            result = wait_for(
                f"alert {rule['alert']}: {expr}", lambda e=expr: _has_data(prom, e), timeout=30
            )
            note(f"alert {rule['alert']} (a device made unhealthy)", expr, result)

    # The unhealthy device's alert is pending (it fires after unhealthyForMinutes).
    def pending_alert() -> list[dict[str, Any]]:
        return [
            a
            for a in prom.api("alerts")["alerts"]
            if a["labels"].get("alertname") == "KubenpuNpuDeviceUnhealthy"
        ]

    (alert,) = wait_for("KubenpuNpuDeviceUnhealthy pending", pending_alert, timeout=30)
    assert alert["state"] == "pending", alert
    assert alert["labels"]["pod"] == f"device-plugin-{setup.node}"
    assert alert["annotations"]["summary"] == (
        f"1 unhealthy NPU(s) behind device plugin {NAMESPACE}/device-plugin-{setup.node}"
    )
    assert prom.query("kubenpu_console_pending_npu_pod_oldest_seconds")[0]["value"][1] != "0"
    text = "\n".join(report) + "\n"
    print("\nevery expression, as Prometheus answered:\n" + text)
    if os.environ.get("KUBENPU_ARTIFACTS"):
        out = Path(os.environ["KUBENPU_ARTIFACTS"]) / "console-prometheus"
        out.mkdir(parents=True, exist_ok=True)
        (out / "queries.txt").write_text(text)
