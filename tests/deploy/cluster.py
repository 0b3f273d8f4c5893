"""kubectl against the deploy tests' dev cluster, and the few CRDs the chart may use."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml

from kubenpu.devcluster import binaries
from kubenpu.devcluster.cluster import DevCluster


def crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    """A minimal CustomResourceDefinition: the API group and kind exist, any content goes.

    Stand-ins for the Prometheus Operator's and cert-manager's CRDs (not installable here):
    enough for the API server to accept the chart's objects of those kinds.
    """
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


STAND_IN_CRDS = [
    crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    crd("cert-manager.io", "Certificate", "certificates"),
    crd("cert-manager.io", "Issuer", "issuers"),
]


class KubectlError(AssertionError):
    """kubectl exited non-zero; the message carries its stderr."""


class ApiServer:
    """The dev cluster, driven through the installed kubectl."""

    def __init__(self, dev: DevCluster) -> None:
        self.dev = dev
        self.kubeconfig = str(dev.kubeconfig)
        binary = binaries.kubectl()
        assert binary, "no kubectl on PATH nor built by hack/build-control-plane.sh"
        self.binary = binary
        self._crds = False

    def kubectl(self, *args: str, stdin: str | None = None, as_user: str | None = None) -> str:
        """Run kubectl; return stdout, raise KubectlError with stderr on failure."""
        cmd = [self.binary, "--kubeconfig", self.kubeconfig, *args]
        if as_user:
            cmd += ["--as", as_user]
        result = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Create or update a namespace (never deleted: no namespace controller runs)."""
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        if labels:
            ns["metadata"]["labels"] = labels
        self.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(ns))

    def ensure_stand_in_crds(self) -> None:
        """Install the stand-in CRDs once and wait until they serve."""
        if self._crds:
            return
        self.kubectl("apply", "--server-side", "-f", "-", stdin=_list(STAND_IN_CRDS))
        for item in STAND_IN_CRDS:
            self.kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                f"crd/{item['metadata']['name']}",
            )
        self._crds = True

    def dry_run_apply(self, objects: list[dict[str, Any]]) -> list[str]:
        """Server-side apply with --dry-run=server; the API server's line per object."""
        out = self.kubectl(
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=kubenpu-deploy-test",
            "-f",
            "-",
            stdin=_list(objects),
        )
        return out.splitlines()

    def get(self, *args: str) -> dict[str, Any]:
        """``kubectl get ... -o json``."""
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def can_i(self, user: str, verb: str, resource: str, namespace: str | None = None) -> bool:
        """``kubectl auth can-i`` as a user, answered by the API server's authorizer.

        ``resource`` is ``type[/name]``, or ``type:subresource`` (e.g. ``pods:binding``).
        """
        resource, _, subresource = resource.partition(":")
        args = ["auth", "can-i", verb, resource]
        if subresource:
            args.append(f"--subresource={subresource}")
        if namespace:
            args += ["-n", namespace]
        cmd = [self.binary, "--kubeconfig", self.kubeconfig, *args, "--as", user]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl auth can-i: {result.stderr.strip()}"
        return answer == "yes"


def _list(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)
