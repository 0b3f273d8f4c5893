"""The admission webhook in a dev cluster: its certificate, process and registration.

``kubenpu webhook`` runs as one more managed process on 127.0.0.1 with a serving
certificate from the cluster CA and its own client identity (``kubenpu-webhook``, allowed
to read Nodes and Namespaces and nothing else). It is registered with kube-apiserver by
URL with the CA as caBundle, using the same configurations the Helm chart follows
(:mod:`kubenpu.webhook.registration`).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from kubenpu import names
from kubenpu.devcluster import controlplane, pki, rbac
from kubenpu.devcluster.controlplane import HealthError, Paths, wait_http_ok
from kubenpu.kubeclient import raw
from kubenpu.webhook import registration

#: The process's name in state.json and its log.
PROCESS = "webhook"
#: The webhook's user name towards the API server (client certificate CN).
USER = "kubenpu-webhook"
# How long the webhook reuses a read of Nodes / a Namespace: short, so that a test that
# annotates a namespace sees the change within moments.
_NODE_CACHE_SECONDS = "5"
_NAMESPACE_CACHE_SECONDS = "1"


def write_files(paths: Paths, ca: pki.CertificateAuthority, server: str) -> None:
    """The serving certificate for 127.0.0.1 and the webhook's kubeconfig."""
    serving = ca.issue(USER, server=True, dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    pki.write_public(paths.cert(PROCESS), serving.cert_pem)
    pki.write_secret(paths.key(PROCESS), serving.key_pem)
    identity = ca.issue(USER, client=True)
    pki.write_secret(
        _kubeconfig(paths),
        controlplane.kubeconfig_yaml(server, ca.cert_pem, identity, USER).encode(),
    )


def _kubeconfig(paths: Paths) -> Path:
    return paths.root / f"{PROCESS}.kubeconfig"


def argv(kubenpu: Sequence[str], paths: Paths, port: int) -> list[str]:
    """The ``kubenpu webhook`` command line."""
    return [
        *kubenpu,
        "webhook",
        "--listen-address=127.0.0.1",
        f"--port={port}",
        f"--tls-cert-file={paths.cert(PROCESS)}",
        f"--tls-private-key-file={paths.key(PROCESS)}",
        f"--kubeconfig={_kubeconfig(paths)}",
        f"--node-cache-seconds={_NODE_CACHE_SECONDS}",
        f"--namespace-cache-seconds={_NAMESPACE_CACHE_SECONDS}",
    ]


def wait_ready(paths: Paths, port: int, deadline: float) -> None:
    """Poll the webhook's /readyz over TLS (verified against the cluster CA) until 200."""
    context = ssl.create_default_context(cafile=str(paths.cert("ca")))
    wait_http_ok("webhook", port, "/readyz", context, deadline)


#: What the webhook reads: nodes (the largest NPU node) and namespaces (pull-secret label).
_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
]


def register(paths: Paths, port: int, deadline: float) -> None:
    """Grant the webhook its reads, register both configurations, wait until they apply."""
    api_client = k8s_config.new_client_from_config(config_file=str(paths.admin_kubeconfig))
    rbac.grant_user(paths, USER, rules=_RULES)
    admission = k8s.AdmissionregistrationV1Api(api_client)
    base_url = f"https://127.0.0.1:{port}"
    ca_pem = paths.cert("ca").read_bytes()
    admission.create_validating_webhook_configuration(
        registration.validating_configuration(base_url, ca_pem)  # type: ignore[arg-type]
    )
    admission.create_mutating_webhook_configuration(
        registration.mutating_configuration(base_url, ca_pem)  # type: ignore[arg-type]
    )
    _wait_effective(k8s.CoreV1Api(api_client), deadline)


def _probe_pod(npus: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "kubenpu-webhook-probe-"},
        "spec": {
            "containers": [
                {
                    "name": "probe",
                    "image": "registry.invalid/probe",
                    "resources": {"limits": {names.RESOURCE_NPU: npus}},
                }
            ]
        },
    }


def _wait_effective(api: k8s.CoreV1Api, deadline: float) -> None:
    """Wait until kube-apiserver calls both webhooks (its informers pick configurations up
    asynchronously), probing with server-side dry-run creations that store nothing."""
    last = "not probed"
    while time.monotonic() < deadline:
        try:
            # A manifest dict where the client annotates V1Pod: its validate_call builds it.
            created = raw(
                api.create_namespaced_pod(
                    "default",
                    _probe_pod("1"),  # type: ignore[arg-type]
                    dry_run="All",
                    _preload_content=False,
                )
            )
            mutated = bool(json.loads(created.data)["spec"].get("tolerations"))
            try:
                api.create_namespaced_pod("default", _probe_pod("0"), dry_run="All")  # type: ignore[arg-type]
                denied = False
            except ApiException as exc:
                denied = registration.VALIDATING_WEBHOOK in str(exc.body)
            if mutated and denied:
                return
            last = f"mutating effective: {mutated}, validating effective: {denied}"
        except ApiException as exc:
            last = f"HTTP {exc.status}: {exc.reason}"
        time.sleep(0.1)
    raise HealthError(f"admission webhook not in effect in time: {last}")
