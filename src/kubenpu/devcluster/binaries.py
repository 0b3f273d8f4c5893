"""Where the control-plane binaries live, and building them when they are missing.

The versions are pinned in ``hack/go.mod``; ``hack/build-control-plane.sh`` builds them
from their published Go modules into a cache outside the repository. The constants here
repeat those versions (a unit test keeps the two in step) so that an installed kubenpu
knows which binaries to look for without reading the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

from kubenpu.errors import ConfigError

#: The Kubernetes release whose kube-apiserver and kube-scheduler the dev cluster runs.
KUBERNETES_VERSION: Final = "v1.32.13"
#: The etcd release that Kubernetes pins for its own integration tests.
ETCD_VERSION: Final = "v3.5.16"
#: What build-control-plane.sh builds.
BINARIES: Final = ("etcd", "kube-apiserver", "kube-scheduler")

# src/kubenpu/devcluster/binaries.py -> the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT: Final = _REPO_ROOT / "hack" / "build-control-plane.sh"


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
    """The kubectl to use: the one on PATH, else the one build-control-plane.sh builds
    when the machine has none; None when neither is there."""
    found = shutil.which("kubectl")
    if found:
        return found
    built = bin_dir() / "kubectl"
    return str(built) if os.access(built, os.X_OK) else None


def missing() -> list[str]:
    """Binaries not (yet) in :func:`bin_dir`."""
    return [b for b in BINARIES if not os.access(bin_dir() / b, os.X_OK)]


def ensure_built() -> Path:
    """Return :func:`bin_dir`, running the build script first if a binary is missing.

    The script's progress goes to this process's stderr; a cold build takes tens of
    minutes on two cores, a warm call returns at once.
    """
    if not missing():
        return bin_dir()
    if not BUILD_SCRIPT.is_file():
        raise ConfigError(
            f"control-plane binaries {', '.join(missing())} are missing from {bin_dir()} and "
            f"the build script {BUILD_SCRIPT} is not there (run from a kubenpu source checkout)"
        )
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.DEVNULL, check=False)
    if result.returncode != 0 or missing():
        raise ConfigError(
            f"{BUILD_SCRIPT} failed (exit {result.returncode}); still missing: "
            f"{', '.join(missing()) or 'nothing'}"
        )
    return bin_dir()
