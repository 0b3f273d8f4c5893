"""Metrics over HTTP, the peer's callback contract, and the Kubernetes pod lookup."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from kubenpu.devcluster.kubelet import KubeletPeer, PeerDevice
from kubenpu.deviceplugin.kubeapi import kubernetes_pod_lookup

NPU = "aliyun.com/npu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_endpoint(peer: KubeletPeer, start_daemon, health_dir: Path) -> None:
    port = free_port()
    start_daemon(metrics_port=port)
    peer.wait_for_devices(NPU, timeout=5)
    (health_dir / "unhealthy-npu-3").touch()
    peer.wait_for_devices(NPU, lambda ds: not ds[3].healthy, timeout=2)
    peer.allocate(NPU, [["npu-0"], ["npu-1"]])
    with pytest.raises(grpc.RpcError):
        peer.allocate(NPU, [["npu-3"]])
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'kubenpu_deviceplugin_devices{health="Healthy",resource="aliyun.com/npu"} 3.0' in text
    assert 'kubenpu_deviceplugin_devices{health="Unhealthy",resource="aliyun.com/npu"} 1.0' in text
    assert 'allocations_total{resource="aliyun.com/npu",result="ok"} 2.0' in text
    assert 'allocations_total{resource="aliyun.com/npu",result="error"} 1.0' in text
    assert 'kubenpu_deviceplugin_allocate_seconds_count{resource="aliyun.com/npu"} 2.0' in text


def test_peer_callback_and_plugin_disconnect(kubelet_dir: Path, start_daemon) -> None:
    seen: list[tuple[str, tuple[PeerDevice, ...]]] = []
    changed = threading.Event()

    def on_devices(resource: str, devices) -> None:
        seen.append((resource, tuple(devices)))
        changed.set()

    with KubeletPeer(kubelet_dir, on_devices=on_devices) as peer:
        daemon = start_daemon()
        peer.wait_for_devices(NPU, lambda ds: len(ds) == 4, timeout=5)
        assert seen[0][0] == NPU and len(seen[0][1]) == 4
        daemon.shutdown()
        # The plugin is gone: devices stay listed but Unhealthy, like kubelet capacity.
        peer.wait_for_devices(NPU, lambda ds: not any(d.healthy for d in ds), timeout=5)
        assert not any(d.healthy for d in seen[-1][1])


@pytest.fixture
def fake_apiserver() -> Iterator[tuple[str, list[str]]]:
    """A tiny HTTP API answering the pod list; records the query strings."""
    queries: list[str] = []
    pods = {
        "kind": "PodList",
        "items": [
            {
                "metadata": {
                    "namespace": "ml",
                    "name": "infer-0",
                    "uid": "u-1",
                    "annotations": {
                        "kubenpu.io/node": "node-a",
                        "kubenpu.io/devices": "npu-2",
                        "kubenpu.io/shares": "300",
                    },
                }
            },
            {"metadata": {"namespace": "ml", "name": "plain", "uid": "u-2"}},
        ],
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            queries.append(self.path)
            body = json.dumps(pods).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", queries
    server.shutdown()


def test_kubernetes_pod_lookup(fake_apiserver, tmp_path: Path) -> None:
    url, queries = fake_apiserver
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{url}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"""
    )
    placements = kubernetes_pod_lookup("node-a", str(kubeconfig))()
    assert [(p.name, p.devices, p.shares_milli) for p in placements] == [
        ("infer-0", ("npu-2",), (300,))
    ]
    assert "spec.nodeName%3Dnode-a" in queries[0] and "status.phase%3DPending" in queries[0]
