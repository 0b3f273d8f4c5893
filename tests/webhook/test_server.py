"""The webhook's HTTPS server over real TLS sockets, fed AdmissionReviews as kube-apiserver
sends them; certificate rotation without a restart."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from kubenpu.devcluster.pki import CertificateAuthority, KeyPair
from kubenpu.names import ANNOTATION_NPU_REGISTRY, ANNOTATION_NPU_REGISTRY_SECRET, RESOURCE_NPU
from kubenpu.webhook.admission import Admission, NpuNode
from kubenpu.webhook.server import WebhookServer

CA = CertificateAuthority()
UID = "0df28fbd-5f5f-11e8-bc74-36e6bb280816"


def serving_pair(ca: CertificateAuthority = CA) -> KeyPair:
    return ca.issue("kubenpu-webhook", server=True, ip_addresses=("127.0.0.1",))


def write_pair(directory: Path, pair: KeyPair) -> None:
    """Replace the pair the way a Secret volume does: new files swapped in at once."""
    for name, data in (("tls.crt", pair.cert_pem), ("tls.key", pair.key_pem)):
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, directory / name)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebhookServer]:
    write_pair(tmp_path, serving_pair())
    namespaces = {
        "team-a": {
            ANNOTATION_NPU_REGISTRY: "npu-registry.example.com",
            ANNOTATION_NPU_REGISTRY_SECRET: "regsecret",
        }
    }
    admission = Admission(
        lambda: [NpuNode("npu-node-1", 4), NpuNode("npu-node-2", 4)],
        lambda ns: namespaces.get(ns, {}),
    )
    srv = WebhookServer(
        admission, tmp_path / "tls.crt", tmp_path / "tls.key", host="127.0.0.1", port=0
    )
    srv.start()
    yield srv
    srv.stop()


def client_context(ca: CertificateAuthority = CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=ca.cert_pem.decode())
    return context


def connect(server: WebhookServer, ca: CertificateAuthority = CA) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=client_context(ca), timeout=5
    )


def request(
    conn: http.client.HTTPSConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def apiserver_review(pod_spec: dict[str, Any], namespace: str = "team-a") -> bytes:
    """An AdmissionReview as kube-apiserver v1.32 sends it for a pod CREATE."""
    obj = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": "job",
            "namespace": namespace,
            "uid": "c4d5a0b2-5b7e-4a8e-9d1e-0c5b0e7f1a2b",
            "creationTimestamp": "2026-11-28T10:00:00Z",
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update"}],
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
            **pod_spec,
        },
        "status": {},
    }
    review = {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "job",
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "kubenpu-admin", "groups": ["system:masters"]},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }
    return json.dumps(review).encode()


def npu_spec(limit: object, image: str = "npu-registry.example.com/demo/job:1") -> dict:
    return {
        "containers": [
            {
                "name": "npu-inference",
                "image": image,
                "resources": {"limits": {RESOURCE_NPU: limit}, "requests": {RESOURCE_NPU: limit}},
                "terminationMessagePath": "/dev/termination-log",
                "imagePullPolicy": "IfNotPresent",
            }
        ]
    }


def test_validate_mutate_and_probes_on_one_connection(server: WebhookServer) -> None:
    conn = connect(server)
    status, body = request(conn, "POST", "/validate?timeout=5s", apiserver_review(npu_spec("8")))
    assert status == 200
    review = json.loads(body)
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert review["kind"] == "AdmissionReview"
    assert review["response"] == {
        "uid": UID,
        "allowed": False,
        "status": {
            "code": 403,
            "message": 'the pod asks for 8 aliyun.com/npu (container "npu-inference": 8), but '
            "the largest NPU node, npu-node-2, has 4; it could never be scheduled",
        },
    }

    status, body = request(conn, "POST", "/validate?timeout=5s", apiserver_review(npu_spec("1")))
    assert json.loads(body)["response"] == {"uid": UID, "allowed": True}

    status, body = request(conn, "POST", "/mutate?timeout=5s", apiserver_review(npu_spec("1")))
    response = json.loads(body)["response"]
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == [
        {
            "op": "add",
            "path": "/spec/tolerations",
            "value": [{"key": "aliyun.com/npu", "operator": "Exists", "effect": "NoSchedule"}],
        },
        {"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "regsecret"}]},
    ]

    plain = {"containers": [{"name": "web", "image": "nginx", "resources": {}}]}
    for path in ("/validate", "/mutate"):
        status, body = request(conn, "POST", path, apiserver_review(plain))
        assert json.loads(body)["response"] == {"uid": UID, "allowed": True}

    assert request(conn, "GET", "/healthz") == (200, b"ok\n")
    assert request(conn, "GET", "/readyz") == (200, b"ok\n")
    status, metrics = request(conn, "GET", "/metrics")
    text = metrics.decode()
    assert 'kubenpu_webhook_requests_total{result="denied",webhook="validate"} 1.0' in text
    assert 'kubenpu_webhook_requests_total{result="patched",webhook="mutate"} 1.0' in text
    assert 'kubenpu_webhook_requests_total{result="allowed",webhook="validate"} 2.0' in text
    conn.close()


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"not json", "application/json", b"malformed AdmissionReview: body is not JSON"),
        (
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}
            ).encode(),
            "application/json",
            b"malformed AdmissionReview: expected apiVersion admission.k8s.io/v1",
        ),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            "application/json",
            b"malformed AdmissionReview: request is missing or not an object",
        ),
        (b"{}", "text/plain", b"malformed AdmissionReview: Content-Type 'text/plain'"),
        (
            b"[" * 100_000 + b"]" * 100_000,
            "application/json",
            b"malformed AdmissionReview: body is JSON nested too deeply",
        ),
    ],
)
def test_malformed_requests_get_400(
    server: WebhookServer, body: bytes, content_type: str, message: bytes
) -> None:
    conn = connect(server)
    status, answer = request(conn, "POST", "/validate", body, content_type)
    assert status == 400
    assert answer.startswith(message)
    # The connection stays usable after a 400.
    assert request(conn, "GET", "/healthz") == (200, b"ok\n")
    conn.close()


def test_unknown_path_and_oversized_body(server: WebhookServer) -> None:
    conn = connect(server)
    assert request(conn, "POST", "/admit", b"{}")[0] == 404
    assert request(conn, "GET", "/nothing")[0] == 404
    conn.close()
    conn = connect(server)
    conn.putrequest("POST", "/validate")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(5 * 1024 * 1024))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()


def peer_serial(server: WebhookServer, ca: CertificateAuthority = CA) -> int:
    with (
        ssl.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        client_context(ca).wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial_of(pair: KeyPair) -> int:
    return x509.load_pem_x509_certificate(pair.cert_pem).serial_number


def test_rotated_certificate_is_served_without_restart(
    server: WebhookServer, tmp_path: Path
) -> None:
    served = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    assert peer_serial(server) == served.serial_number

    # A rotation to a pair from a new CA (kube-apiserver would get the new caBundle).
    new_ca = CertificateAuthority()
    rotated = serving_pair(new_ca)
    write_pair(tmp_path, rotated)
    assert peer_serial(server, new_ca) == serial_of(rotated)

    # A half-written rotation (key missing its body) keeps the last good pair in service.
    (tmp_path / "tls.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    assert peer_serial(server, new_ca) == serial_of(rotated)
    conn = connect(server, new_ca)
    text = request(conn, "GET", "/metrics")[1].decode()
    conn.close()
    assert 'kubenpu_webhook_certificate_reloads_total{result="ok"} 1.0' in text
    assert 'kubenpu_webhook_certificate_reloads_total{result="failed"} 1.0' in text
    # Completing the rotation picks it up.
    final = serving_pair(new_ca)
    write_pair(tmp_path, final)
    assert peer_serial(server, new_ca) == serial_of(final)


def test_a_client_that_fails_the_handshake_does_not_stop_the_server(
    server: WebhookServer,
) -> None:
    with pytest.raises(ssl.SSLError):
        peer_serial(server, CertificateAuthority())  # does not trust the serving CA
    with ssl.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")  # plain HTTP on the TLS port
    assert peer_serial(server) > 0


# --- connections: lengths, read timeout, latency ----------------------------------------


def raw_tls(server: WebhookServer, timeout: float = 5) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    return client_context().wrap_socket(sock, server_hostname="127.0.0.1")


def status_line(tls: ssl.SSLSocket) -> bytes:
    answer = b""
    while b"\r\n" not in answer:
        chunk = tls.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", None])
def test_bad_content_length_gets_400_at_once(server: WebhookServer, length: str | None) -> None:
    # Content-Length: -1 was read as "until the client closes": no answer for 10 s.
    header = b"" if length is None else f"Content-Length: {length}\r\n".encode()
    with raw_tls(server, timeout=2) as tls:
        started = time.monotonic()
        tls.sendall(
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + header
            + b"\r\n{}"
        )
        assert status_line(tls) == b"HTTP/1.1 400 Bad Request"
        assert time.monotonic() - started < 1.0


@pytest.fixture
def quick_server(tmp_path: Path) -> Iterator[WebhookServer]:
    write_pair(tmp_path, serving_pair())
    admission = Admission(lambda: [NpuNode("npu-node-1", 4)], lambda ns: {})
    srv = WebhookServer(
        admission,
        tmp_path / "tls.crt",
        tmp_path / "tls.key",
        host="127.0.0.1",
        port=0,
        read_timeout=0.5,
        idle_timeout=5.0,
    )
    srv.start()
    yield srv
    srv.stop()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def test_stalled_clients_are_dropped_after_the_read_timeout(quick_server: WebhookServer) -> None:
    stalled: list[socket.socket] = []
    try:
        for _ in range(10):  # half sent: headers promise a body that never comes
            tls = raw_tls(quick_server)
            tls.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            stalled.append(tls)
        for _ in range(10):  # no TLS handshake at all
            stalled.append(socket.create_connection(("127.0.0.1", quick_server.port), timeout=5))
        conn = connect(quick_server)
        assert request(conn, "GET", "/healthz") == (200, b"ok\n")
        conn.close()
        started = time.monotonic()
        assert [closed_within(sock, 3.0) for sock in stalled] == [True] * len(stalled)
        assert time.monotonic() - started < 3.0
    finally:
        for sock in stalled:
            sock.close()


def test_admissions_on_a_kept_alive_connection_take_no_delayed_ack(
    server: WebhookServer,
) -> None:
    # Headers and body written apart waited for the client's delayed ACK (Nagle's
    # algorithm): 40 ms or more per admission, against well under 1 ms of work.
    conn = connect(server)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as kube-apiserver's
    body = apiserver_review(npu_spec("1"))
    times = []
    for _ in range(30):
        started = time.perf_counter()
        status, _ = request(conn, "POST", "/mutate?timeout=5s", body)
        times.append(time.perf_counter() - started)
        assert status == 200
    conn.close()
    assert sorted(times)[len(times) // 2] < 0.015, times
