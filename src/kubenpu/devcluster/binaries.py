"""Where the Kubernetes and node binaries live, and building them when they are missing.

The versions are pinned in ``hack/go.mod`` (Kubernetes, etcd), ``hack/containerd/go.mod``
and ``hack/registry/go.mod``; ``hack/build-control-plane.sh`` and ``hack/build-node.sh``
build them from their published Go modules into a cache outside the repository. The
constants here repeat those versions (a unit test keeps them in step) so that an installed
kubenpu knows which binaries to look for without reading the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Final

from kubenpu.errors import ConfigError

#: The Kubernetes release the dev cluster runs (control plane, kubelet, kube-proxy, kubectl).
KUBERNETES_VERSION: Final = "v1.37.2"
#: The etcd release that Kubernetes v1.37 is built against.
ETCD_VERSION: Final = "v3.7.0"
#: What build-control-plane.sh builds.
BINARIES: Final = (
    "etcd",
    "kube-apiserver",
    "kube-scheduler",
    "kube-controller-manager",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
#: The containerd release of the real nodes.
CONTAINERD_VERSION: Final = "v2.4.2"
#: The CNCF distribution release of the private registry.
REGISTRY_VERSION: Final = "v3.1.2"
#: What build-node.sh builds.
NODE_BINARIES: Final = ("containerd", "containerd-shim-runc-v2", "ctr", "registry")
#: Debian's runc and CNI plugins (build-node.sh installs them).
RUNC: Final = "/usr/sbin/runc"
CNI_BIN_DIR: Final = "/usr/lib/cni"

# src/kubenpu/devcluster/binaries.py -> the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT: Final = _REPO_ROOT / "hack" / "build-control-plane.sh"
NODE_BUILD_SCRIPT: Final = _REPO_ROOT / "hack" / "build-node.sh"


def cache_root() -> Path:
    """The kubenpu cache: ``$KUBENPU_CACHE_DIR``, else ``$XDG_CACHE_HOME/kubenpu``."""
    explicit = os.environ.get("KUBENPU_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kubenpu"


def bin_dir() -> Path:
    """The directory build-control-plane.sh puts this version's binaries in."""
    return cache_root() / f"k8s-{KUBERNETES_VERSION}" / "bin"


def kubectl() -> str | None:
    """The kubectl built with the control plane (the same minor version as the server),
    else the one on PATH; None when neither is there."""
    built = bin_dir() / "kubectl"
    if os.access(built, os.X_OK):
        return str(built)
    return shutil.which("kubectl")


def node_bin_dir() -> Path:
    """The directory build-node.sh puts containerd, its shim, ctr and the registry in."""
    return (
        cache_root() / f"node-containerd-{CONTAINERD_VERSION}-registry-{REGISTRY_VERSION}" / "bin"
    )


def node_missing() -> list[str]:
    """Node binaries (and Debian tools) not there yet."""
    gone = [b for b in NODE_BINARIES if not os.access(node_bin_dir() / b, os.X_OK)]
    gone += [p for p in (RUNC, f"{CNI_BIN_DIR}/bridge") if not os.access(p, os.X_OK)]
    return gone


def ensure_node_built() -> Path:
    """Return :func:`node_bin_dir`, running build-node.sh first if anything is missing."""
    if node_missing():
        _run_build(NODE_BUILD_SCRIPT, node_missing)
    return node_bin_dir()


def missing() -> list[str]:
    """Binaries not (yet) in :func:`bin_dir`."""
    return [b for b in BINARIES if not os.access(bin_dir() / b, os.X_OK)]


def ensure_built() -> Path:
    """Return :func:`bin_dir`, running the build script first if a binary is missing.

    The script's progress goes to this process's stderr; a cold build takes tens of
    minutes on two cores, a warm call returns at once.
    """
    if missing():
        _run_build(BUILD_SCRIPT, missing)
    return bin_dir()


def _run_build(script: Path, still_missing: Callable[[], list[str]]) -> None:
    if not script.is_file():
        raise ConfigError(
            f"{', '.join(still_missing())} missing and the build script {script} is not "
            "there (run from a kubenpu source checkout)"
        )
    result = subprocess.run(["bash", str(script)], stdout=subprocess.DEVNULL, check=False)
    if result.returncode != 0 or still_missing():
        raise ConfigError(
            f"{script} failed (exit {result.returncode}); still missing: "
            f"{', '.join(still_missing()) or 'nothing'}"
        )
