"""Admission latency of the webhook: sequential AdmissionReviews over HTTPS on loopback.

Starts the real :class:`WebhookServer` (TLS, a throwaway CA) in its own process, forked,
as kube-apiserver is another process, then sends ``--requests`` pod CREATE reviews one
after the other on one keep-alive connection, the way kube-apiserver calls a webhook
(its Go client writes each request at once and sets TCP_NODELAY; so does this one), for
``/validate`` and ``/mutate`` in turn, and prints the client-side round trip p50/p99.
For scale it also times the admission handler alone, in process (no HTTP, no TLS): what
the server adds on top is the difference.

Target: p99 < 10 ms per admission (every NPU pod creation waits for both webhooks).

    .venv/bin/python bench/webhook_bench.py [--requests 500]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import socket
import ssl
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubenpu.devcluster.pki import CertificateAuthority
from kubenpu.names import ANNOTATION_NPU_REGISTRY, ANNOTATION_NPU_REGISTRY_SECRET, RESOURCE_NPU
from kubenpu.webhook.admission import Admission, NpuNode
from kubenpu.webhook.review import parse_review
from kubenpu.webhook.server import WebhookServer

TARGET_P99_MS = 10.0
#: At most this many requests per path, whatever is asked: the loop stays bounded.
MAX_REQUESTS = 20_000


def admission() -> Admission:
    """Rules with in-memory lookups: two 4-NPU nodes, one namespace with a registry."""
    namespace = {
        ANNOTATION_NPU_REGISTRY: "npu-registry.example.com",
        ANNOTATION_NPU_REGISTRY_SECRET: "regsecret",
    }
    return Admission(
        lambda: [NpuNode("npu-node-1", 4), NpuNode("npu-node-2", 4)],
        lambda ns: namespace if ns == "team-a" else {},
    )


def review(k: int) -> bytes:
    """A pod CREATE AdmissionReview as kube-apiserver sends it (about 1.5 kB)."""
    container = {
        "name": "npu-inference",
        "image": "npu-registry.example.com/demo/job:1",
        "resources": {"limits": {RESOURCE_NPU: "1"}, "requests": {RESOURCE_NPU: "1"}},
        "terminationMessagePath": "/dev/termination-log",
        "imagePullPolicy": "IfNotPresent",
    }
    pod = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": f"job-{k}", "namespace": "team-a", "uid": f"uid-{k}"},
        "spec": {
            "containers": [container],
            "restartPolicy": "Never",
            "schedulerName": "default-scheduler",
        },
        "status": {},
    }
    body = {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": f"review-{k}",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": f"job-{k}",
            "namespace": "team-a",
            "operation": "CREATE",
            "userInfo": {"username": "bench", "groups": ["system:masters"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def over_https(port: int, ca_pem: bytes, path: str, bodies: list[bytes]) -> list[float]:
    """Client-side round trips of ``bodies`` POSTed to ``path``, one keep-alive connection."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Go's net.Dial
    headers = {"Content-Type": "application/json"}
    samples = []
    try:
        for body in bodies:
            started = time.perf_counter()
            conn.request("POST", path + "?timeout=10s", body, headers)
            response = conn.getresponse()
            answer = response.read()
            samples.append(time.perf_counter() - started)
            assert response.status == 200, (response.status, answer[:200])
    finally:
        conn.close()
    return samples


def in_process(rules: Admission, path: str, bodies: list[bytes]) -> list[float]:
    """The admission handler alone: parse, decide, encode."""
    handler: Any = rules.validate if path == "/validate" else rules.mutate
    samples = []
    for body in bodies:
        started = time.perf_counter()
        json.dumps(handler(parse_review(body))).encode()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="per path (bounded)")
    opts = parser.parse_args()
    count = max(1, min(opts.requests, MAX_REQUESTS))
    ca = CertificateAuthority()
    pair = ca.issue("kubenpu-webhook", server=True, ip_addresses=("127.0.0.1",))
    with tempfile.TemporaryDirectory(prefix="webhook-bench") as tmp:
        cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert.write_bytes(pair.cert_pem)
        key.write_bytes(pair.key_pem)
        server = WebhookServer(admission(), cert, key, host="127.0.0.1", port=0)
        child = multiprocessing.get_context("fork").Process(
            target=_serve, args=(server,), daemon=True
        )
        child.start()
        try:
            bodies = [review(k) for k in range(count)]
            rows = []
            for path in ("/validate", "/mutate"):
                over_https(server.port, ca.cert_pem, path, bodies[:20])  # warm-up
                rows.append(
                    (path, "over HTTPS", over_https(server.port, ca.cert_pem, path, bodies))
                )
                rows.append((path, "handler only", in_process(admission(), path, bodies)))
        finally:
            child.terminate()
            child.join()
    print(
        f"{'path':<10} {'how':<13} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'target p99':>11}"
    )
    for path, how, samples in rows:
        p50, p99 = percentiles(samples)
        verdict = ("ok" if p99 < TARGET_P99_MS else "MISSED") if how == "over HTTPS" else ""
        target = f"< {TARGET_P99_MS:.0f}" if how == "over HTTPS" else ""
        print(
            f"{path:<10} {how:<13} {len(samples):>8} {p50:>8.2f} {p99:>8.2f} {target:>11} {verdict}"
        )


def _serve(server: WebhookServer) -> None:
    """The forked server process: serve (in a daemon thread) until terminated."""
    server.start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
