"""Where the pinned ``k8s.io/kubelet`` Go module is, for tests that compare our copies of
its published protos with it (hack/build-control-plane.sh downloads it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kubenpu.devcluster import binaries


def kubelet_module() -> Path:
    """The module's directory in the Go module cache; skip (or, under CI, fail) the
    calling test when it is missing."""
    staging = binaries.KUBERNETES_VERSION.replace("v1.", "v0.", 1)
    go = shutil.which("go")
    cache = (
        subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True).stdout.strip()
        if go
        else ""
    )
    path = Path(cache) / f"k8s.io/kubelet@{staging}"
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: hack/build-control-plane.sh downloads it")
        pytest.skip(f"no k8s.io/kubelet {staging} in the Go module cache")
    return path
