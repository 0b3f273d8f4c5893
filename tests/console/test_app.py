"""The console's HTTP application, served by a real uvicorn on loopback, over a store fed
with fixed objects (tests/console/test_e2e_console.py runs it against a dev cluster)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.objects import node, pod
from console.server import SseReader, get, serving
from kubenpu.console.app import Console
from kubenpu.console.simreport import SimulatorFeed, load_report
from kubenpu.console.store import ConsoleStore
from kubenpu.errors import InputError

REPORT = {
    "runs": [
        {
            "policy": p,
            "seed": 42,
            "tune": 1.3,
            "total_devices": 8,
            "allocation_curve": [0.0, 50.0, final],
            "final_allocation_pct": final,
            "unscheduled_pods": 3,
            "explain_pct": {"fractional": 2.0, "no demand": 0.0},
        }
        for p, final in (("kubenpu", 97.5), ("fgd", 94.25))
    ]
}


@pytest.fixture
def base(store: ConsoleStore, tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(REPORT))
    console = Console(store, SimulatorFeed(load_report(path)), loopback_only=True)
    with serving(console.app) as url:
        yield url


def test_cluster_page(base: str) -> None:
    status, headers, body = get(base + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in headers["content-security-policy"]
    assert re.search(r'data-device="n1-npu0" data-kind="whole" data-pods="default/a"', body)
    assert 'data-device="n1-npu1" data-kind="shared" data-pods="default/s60 default/s30"' in body
    assert 'data-device="n2-npu3" data-kind="unhealthy"' in body
    assert '<b id="allocation">23.8%</b>' in body
    assert "host-aware FGD" in body and "1 pending NPU pod" in body
    assert 'data-fragment="/?fragment=1"' in body and "/static/live.js" in body
    status, _, fragment = get(base + "/?fragment=1")
    assert status == 200 and "<html" not in fragment and 'data-node="n1"' in fragment


def test_node_page_and_unknown_node(base: str) -> None:
    status, _, body = get(base + "/nodes/n1")
    assert status == 200
    for text in ("hanguang-800", "ecs.ebman1.26xlarge", "n1-npu3", "default/s30", "Rebooted"):
        assert text in body, text
    assert '<tr data-pod="default/s60">' in body
    status, _, body = get(base + "/nodes/no-such-node")
    assert status == 404
    assert "There is no node named “no-such-node” in the cluster." in body
    assert "data-fragment" not in body


def test_pending_page(base: str) -> None:
    status, _, body = get(base + "/pending")
    assert status == 200
    assert '<tr data-pod="default/w">' in body
    assert "too few free whole NPUs" in body and "a taint the pod does not tolerate" in body
    assert "3 attempts" in body


def test_simulator_page_from_a_report_file(base: str) -> None:
    status, _, body = get(base + "/simulator")
    assert status == 200
    assert '<tr data-policy="kubenpu">' in body and "97.50%" in body and "94.25%" in body
    assert body.count('<polyline class="curve"') == 2 and "fractional" in body


def test_health_metrics_static_and_errors(base: str) -> None:
    assert get(base + "/healthz")[0] == 200
    assert get(base + "/readyz")[:3:2] == (200, "ok\n")
    status, headers, text = get(base + "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'kubenpu_console_npus{model="hanguang-800",node="n1",state="whole"} 1.0' in text
    assert 'kubenpu_console_device_shares{device="n1-npu1",node="n1"} 2.0' in text
    assert "kubenpu_console_pending_npu_pods 1.0" in text
    assert "kubenpu_console_pending_npu_pod_oldest_seconds 600.0" in text
    assert get(base + "/static/live.js")[0] == 200
    assert get(base + "/nothing/here")[0] == 404


def test_read_only_and_loopback_hosts_only(base: str) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(base + "/", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 405
    rebinding = urllib.request.Request(base + "/", headers={"Host": "evil.example.com"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(rebinding, timeout=5)
    assert err.value.code == 400


def test_events_stream_sends_a_change_after_an_update(base: str, store: ConsoleStore) -> None:
    reader = SseReader(base + "/events")
    try:
        name, first = reader.next_event()
        assert name == "hello"
        started = time.monotonic()
        store.pod_event("ADDED", pod("new", npus=1))
        name, data = reader.next_event()
        assert name == "change" and data != first
        assert time.monotonic() - started < 2
        store.node_event("MODIFIED", node("n1", unhealthy=(2,)))
        assert reader.next_event()[0] == "change"
    finally:
        reader.close()
    _, _, body = get(base + "/?fragment=1")
    assert 'data-device="n1-npu2" data-kind="unhealthy"' in body


def test_simulator_default_is_computed_on_demand(store: ConsoleStore) -> None:
    calls = []

    def compute(budget: float) -> tuple[dict, list[str]]:
        calls.append(budget)
        time.sleep(0.2)
        return REPORT, ["a note"]

    feed = SimulatorFeed(budget_s=7, compute=compute)
    console = Console(store, feed)
    with serving(console.app) as url:
        assert "Replaying the built-in default" in get(url + "/simulator")[2]
        deadline = time.monotonic() + 10
        while "97.50%" not in (body := get(url + "/simulator")[2]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert calls == [7] and "a note" in body and feed.version == 1


def test_bad_report_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("{")
    with pytest.raises(InputError, match="not JSON"):
        load_report(path)
    with pytest.raises(InputError, match="No such file"):
        load_report(tmp_path / "missing.json")
