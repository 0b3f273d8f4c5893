"""The real HTTP server on loopback, with bodies exactly as kube-scheduler sends them."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extender.fakeapi import FakeApi, node, pod
from extender.gofmt import fit_error, sprintf_no_operands
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


def test_go_fmt_stand_in_garbles_as_the_issue_saw() -> None:
    # The stand-in for kube-scheduler's formatting reproduces what `kubectl describe` showed.
    assert sprintf_no_operands("no NPU with 60% free core") == "no NPU with 60%!f(MISSING)ree core"
    assert sprintf_no_operands("100%% and 5%") == "100% and 5%!(NOVERB)"


def test_fragmented_share_reason_reads_right_after_kube_scheduler_formats_it() -> None:
    # Counts fit (2 x 40 free npu-core), no single NPU does: only kubenpu's filter says no.
    api = FakeApi([node("n1", 2)])
    ext = Extender(ClusterCache("fgd"), api)
    ext.cache.replace_nodes(api.list("nodes")[0])
    srv = ExtenderHTTPServer(("127.0.0.1", 0), ext)
    srv.start()
    try:
        for i in range(2):
            p = api.add_pod(pod(f"s{i}", core=60))
            meta = p["metadata"]
            bind = {"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"]}
            status, raw = call(srv, "POST", "/bind", json.dumps(dict(bind, Node="n1")).encode())
            assert (status, json.loads(raw)) == (200, {"Error": ""})
        ext.cache.replace_pods(api.list("pods")[0])
        body = {"Pod": pod("s2", core=60), "Nodes": None, "NodeNames": ["n1"]}
        status, raw = call(srv, "POST", "/filter", json.dumps(body).encode())
        assert status == 200
        failed = json.loads(raw)["FailedNodes"]
        # A pod the adapter refuses: its own text (with a "%") comes back in the reason.
        bad = pod("bad")
        bad["spec"]["containers"][0]["resources"]["limits"]["aliyun.com/npu-core"] = "30%"
        body = {"Pod": bad, "Nodes": None, "NodeNames": ["n1"]}
        status, raw = call(srv, "POST", "/filter", json.dumps(body).encode())
        never = json.loads(raw)["FailedAndUnresolvableNodes"]
    finally:
        srv.shutdown()
        srv.server_close()
    message = fit_error(1, failed)
    want = (
        "0/1 nodes are available: 1 Insufficient aliyun.com/npu-core: "
        "no NPU with 60 percent free core."
    )
    # The event (formatted) and the PodScheduled condition (not formatted) read alike.
    assert sprintf_no_operands(message) == message == want
    message = fit_error(1, never)
    assert sprintf_no_operands(message) == message
    assert "'30\uff05' is not a valid quantity" in message


# --- connections: read timeout, bad bodies, clients that go away ------------------------


def quick_server(**timeouts: float) -> ExtenderHTTPServer:
    api = FakeApi([node("n1"), node("n2"), node("cpu", 0)])
    ext = Extender(ClusterCache("fgd"), api)
    ext.cache.replace_nodes(api.list("nodes")[0])
    srv = ExtenderHTTPServer(("127.0.0.1", 0), ext, **timeouts)
    srv.start()
    return srv


def dropped(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (sending nothing)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_stalled_clients_are_dropped_after_the_read_timeout() -> None:
    srv = quick_server(read_timeout=0.5, idle_timeout=5.0)
    stalled: list[socket.socket] = []
    try:
        # Headers promising a body that never comes, and connections that send nothing.
        for i in range(25):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            stalled.append(sock)
            if i < 20:
                sock.sendall(b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        # Meanwhile the others are served.
        status, _ = call(srv, "POST", "/filter", json.dumps(FILTER_BODY).encode())
        assert status == 200
        started = time.monotonic()
        assert [dropped(sock, 3.0) for sock in stalled] == [True] * len(stalled)
        assert time.monotonic() - started < 3.0
    finally:
        for sock in stalled:
            sock.close()
        srv.shutdown()
        srv.server_close()


def test_kept_alive_connection_may_idle_longer_than_the_read_timeout() -> None:
    # kube-scheduler reuses its connection between scheduling cycles.
    srv = quick_server(read_timeout=0.2, idle_timeout=5.0)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        for _ in range(2):
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() == b"ok\n"
            time.sleep(0.5)
        conn.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_deeply_nested_json_gets_400_not_500(
    server: ExtenderHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for body in (deep, b'{"Pod":' + deep + b',"NodeNames":["n1"]}'):
        status, raw = call(server, "POST", "/filter", body)
        assert status == 400
        assert "bad filter request: body is not JSON" in json.loads(raw)["Error"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_clients_that_go_away_cost_one_debug_line(
    server: ExtenderHTTPServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kubenpu.httpserving")
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        # Reset, not closed: the server's next read or write fails at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    deadline = time.monotonic() + 5
    ended: list[logging.LogRecord] = []
    while len(ended) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        ended = [r for r in caplog.records if "ended" in r.getMessage()]
    assert len(ended) == 3
    assert all(r.levelno == logging.DEBUG and not r.exc_info for r in ended)
    assert "Traceback" not in capfd.readouterr().err
    assert call(server, "GET", "/healthz") == (200, b"ok\n")


def test_expect_100_continue_is_answered_before_the_body(server: ExtenderHTTPServer) -> None:
    # The write buffer that joins headers and body must not hold back "100 Continue".
    body = json.dumps(FILTER_BODY).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(
            b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
