"""The real HTTP server on loopback, with bodies exactly as kube-scheduler sends them."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from extender.fakeapi import FakeApi, node, pod
from kubenpu.extender.cache import ClusterCache
from kubenpu.extender.core import Extender
from kubenpu.extender.server import ExtenderHTTPServer

# What kube-scheduler v1.32 POSTs to <urlPrefix>/filter for a nodeCacheCapable extender:
# the whole Pod, Nodes null, NodeNames. Go's encoding/json writes the field names as is.
FILTER_BODY = {
    "Pod": {
        "metadata": {
            "name": "infer",
            "namespace": "default",
            "uid": "0b5f9f6e-8a43-4b2a-9a55-3f3c2b1d7e10",
            "resourceVersion": "1234",
            "creationTimestamp": "2026-11-28T10:00:00Z",
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "npu-registry.example.com/demo/npu-job:1.0",
                    "resources": {
                        "limits": {"aliyun.com/npu-core": "40"},
                        "requests": {"aliyun.com/npu-core": "40"},
                    },
                }
            ],
            "restartPolicy": "Never",
            "schedulerName": "default-scheduler",
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    },
    "Nodes": None,
    "NodeNames": ["n1", "n2", "cpu"],
}


@pytest.fixture
def server() -> Iterator[ExtenderHTTPServer]:
    api = FakeApi([node("n1"), node("n2"), node("cpu", 0)])
    ext = Extender(ClusterCache("fgd"), api)
    ext.cache.replace_nodes(api.list("nodes")[0])
    ready = {"ok": True}
    srv = ExtenderHTTPServer(("127.0.0.1", 0), ext, ready=lambda: (ready["ok"], "not synced: pods"))
    srv.ready_flag = ready  # type: ignore[attr-defined]
    srv.api = api  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def call(
    srv: ExtenderHTTPServer, method: str, path: str, body: bytes | None = None, **kw
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5, **kw)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def test_filter_prioritize_bind_over_http(server: ExtenderHTTPServer) -> None:
    status, raw = call(server, "POST", "/filter", json.dumps(FILTER_BODY).encode())
    assert status == 200
    assert json.loads(raw) == {
        "NodeNames": ["n1", "n2"],
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {"cpu": "no NPU devices"},
        "Error": "",
    }
    body = dict(FILTER_BODY, NodeNames=["n1", "n2"])
    status, raw = call(server, "POST", "/prioritize", json.dumps(body).encode())
    assert status == 200
    scores = json.loads(raw)
    assert [s["Host"] for s in scores] == ["n1", "n2"]
    assert sorted(s["Score"] for s in scores)[-1] == 10
    assert all(isinstance(s["Score"], int) and 0 <= s["Score"] <= 10 for s in scores)

    api: FakeApi = server.api  # type: ignore[attr-defined]
    api.add_pod(pod("infer", core=40, uid=FILTER_BODY["Pod"]["metadata"]["uid"]))
    bind = {
        "PodName": "infer",
        "PodNamespace": "default",
        "PodUID": FILTER_BODY["Pod"]["metadata"]["uid"],
        "Node": "n2",
    }
    status, raw = call(server, "POST", "/bind", json.dumps(bind).encode())
    assert (status, json.loads(raw)) == (200, {"Error": ""})
    assert api.get_pod("default", "infer")["spec"]["nodeName"] == "n2"


def test_filter_with_full_nodes_answers_with_nodes(server: ExtenderHTTPServer) -> None:
    # Without nodeCacheCapable kube-scheduler sends Nodes and expects Nodes back.
    nodes = {"items": [{"metadata": {"name": "n1"}}, {"metadata": {"name": "cpu"}}]}
    body = dict(FILTER_BODY, Nodes=nodes, NodeNames=None)
    status, raw = call(server, "POST", "/filter", json.dumps(body).encode())
    result = json.loads(raw)
    assert status == 200
    assert result["Nodes"] == {"items": [{"metadata": {"name": "n1"}}]}
    assert result["NodeNames"] is None


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/filter", b"{not json", "bad filter request: body is not JSON"),
        ("/filter", b"[]", "ExtenderArgs must be a JSON object, not list"),
        ("/prioritize", b'{"Pod": {}, "NodeNames": []}', "Pod must be a Pod object"),
        ("/filter", json.dumps({"Pod": {"metadata": {}}}).encode(), "needs NodeNames"),
        ("/filter", b'{"Pod": {"metadata": {}}, "NodeNames": [1]}', "list of strings"),
        ("/bind", b'{"PodName": "a"}', "PodNamespace must be a non-empty string"),
    ],
)
def test_malformed_requests_get_400(server, path, body, message) -> None:
    status, raw = call(server, "POST", path, body)
    assert status == 400
    assert message in json.loads(raw)["Error"]


def test_paths_health_readiness_metrics(server: ExtenderHTTPServer) -> None:
    assert call(server, "POST", "/preempt", b"{}")[0] == 404
    assert call(server, "GET", "/nothing")[0] == 404
    assert call(server, "GET", "/healthz") == (200, b"ok\n")
    assert call(server, "GET", "/readyz") == (200, b"ok\n")
    server.ready_flag["ok"] = False  # type: ignore[attr-defined]
    assert call(server, "GET", "/readyz") == (503, b"not synced: pods\n")
    call(server, "POST", "/filter", json.dumps(FILTER_BODY).encode())
    status, raw = call(server, "GET", "/metrics")
    text = raw.decode()
    assert status == 200
    assert 'kubenpu_extender_decisions_total{result="ok",verb="filter"} 1.0' in text
    assert 'kubenpu_extender_latency_seconds_count{verb="filter"} 1.0' in text
    # Without a Content-Length the body cannot be read safely.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.putrequest("POST", "/filter")
    conn.endheaders()
    assert conn.getresponse().status == 400


def test_https(tmp_path: Path) -> None:
    from kubenpu.devcluster.pki import CertificateAuthority

    ca = CertificateAuthority()
    pair = ca.issue("extender", server=True, ip_addresses=("127.0.0.1",))
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    srv = ExtenderHTTPServer(
        ("127.0.0.1", 0), Extender(ClusterCache("fgd")), tls=(str(cert), str(key))
    )
    srv.start()
    try:
        context = ssl.create_default_context(cadata=ca.cert_pem.decode())
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=context, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok\n"
    finally:
        srv.shutdown()
        srv.server_close()


def test_encode_priorities_is_json() -> None:
    from kubenpu.extender.wire import encode_priorities, priority_heads

    names = ["n1", 'we"ird\\name', "ünï"]
    scores = [10, 0, 7]
    got = encode_priorities(priority_heads(names), scores)
    want = [{"Host": n, "Score": s} for n, s in zip(names, scores, strict=True)]
    assert json.loads(got) == want
    assert got == json.dumps(want, separators=(",", ":")).encode()
