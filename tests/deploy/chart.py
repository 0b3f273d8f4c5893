"""Render the kubenpu Helm chart with the real ``helm`` and look into the result.

``helm`` is the one hack/build-helm.sh builds from its Go module (a no-op once cached).
Tests that need it are skipped, with the reason, only where it cannot be built (no Go).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "kubenpu"
#: Not plain "kubenpu": `kubenpu dev-cluster` registers webhook configurations named
#: kubenpu-webhook of its own, which the chart's objects must not collide with.
RELEASE = "kubenpu-ci"
NAMESPACE = "kubenpu-system"

#: Value sets every rendering test runs through: the default install and the variations an
#: operator is most likely to pick.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "webhook-off": {"webhook": {"enabled": False}},
    "cert-manager": {"webhook": {"certificate": {"certManager": {"enabled": True}}}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "sharing-mock": {"devicePlugin": {"backend": "mock", "sharing": True, "memoryResource": True}},
    "platform-scheduler": {
        "scheduler": {"mode": "platform"},
        "extender": {"service": {"type": "NodePort", "nodePort": 30888}},
    },
    "private-registry": {
        "image": {"registry": "registry.example.com/team", "tag": "0.1.0-rc1"},
        "imagePullSecrets": [{"name": "regsecret"}],
    },
    "dra-driver": {"draDriver": {"enabled": True}},
}


class HelmError(AssertionError):
    """helm exited non-zero; the message carries its stderr."""


@functools.cache
def helm_binary() -> str:
    """Path of the helm built by hack/build-helm.sh; skips the test if it cannot be built."""
    script = REPO / "hack" / "build-helm.sh"
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=1200, check=False
    )
    if result.returncode != 0:
        if go is None:
            pytest.skip(f"helm cannot be built here: no Go toolchain ({result.stderr.strip()})")
        raise AssertionError(f"hack/build-helm.sh failed:\n{result.stderr}")
    return str(Path(result.stdout.strip().splitlines()[-1]) / "helm")


def helm(*args: str, kubeconfig: str | None = None, timeout: float = 120) -> str:
    """Run helm; return stdout, raise HelmError with stderr on failure."""
    cmd = [helm_binary(), *args]
    if kubeconfig:
        cmd += ["--kubeconfig", kubeconfig]
    with tempfile.TemporaryDirectory(prefix="kubenpu-helm-") as home:
        # Helm's own config/cache/data dirs (and HOME, where the Kubernetes client keeps
        # its discovery cache): never the developer's, never the working directory.
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": home,
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_DATA_HOME": f"{home}/data",
        }
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    if result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def values_file(values: Mapping[str, Any], directory: Path) -> Path:
    """Write values as a file for -f (JSON is YAML)."""
    path = directory / "values.json"
    path.write_text(json.dumps(values))
    return path


def render_text(values: Mapping[str, Any] | None = None, *extra: str) -> str:
    """``helm template`` output for the values."""
    with tempfile.TemporaryDirectory(prefix="kubenpu-values-") as tmp:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        if values:
            args += ["-f", str(values_file(values, Path(tmp)))]
        return helm(*args, *extra)


@functools.cache
def _render_cached(values_json: str) -> tuple[dict[str, Any], ...]:
    text = render_text(json.loads(values_json))
    return tuple(d for d in yaml.safe_load_all(text) if d)


def render(values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The rendered objects (each a fresh copy)."""
    docs = _render_cached(json.dumps(values or {}, sort_keys=True))
    return json.loads(json.dumps(list(docs)))


def kinds(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(kind, name) of each object, sorted."""
    return sorted((o["kind"], o["metadata"]["name"]) for o in objects)


def find(objects: list[dict[str, Any]], kind: str, component: str | None = None) -> list[dict]:
    """Objects of a kind (and component label)."""
    return [
        o
        for o in objects
        if o["kind"] == kind
        and (
            component is None
            or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        )
    ]


def one(objects: list[dict[str, Any]], kind: str, component: str | None = None) -> dict:
    """The single object of a kind (and component)."""
    found = find(objects, kind, component)
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {kinds(found)}"
    return found[0]


def workloads(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """DaemonSets and Deployments."""
    return (o for o in objects if o["kind"] in ("DaemonSet", "Deployment"))


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two value trees (override wins), as helm merges -f files."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out
