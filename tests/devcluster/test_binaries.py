"""The versions the Python side looks for are the ones hack/go.mod builds."""

import re
from pathlib import Path

from kubenpu.devcluster import binaries

GO_MOD = Path(__file__).resolve().parents[2] / "hack" / "go.mod"


def _required(module: str) -> str:
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)$", GO_MOD.read_text(), re.MULTILINE)
    assert match, f"{module} not required in {GO_MOD}"
    return match.group(1)


def test_kubernetes_version_matches_go_mod() -> None:
    assert _required("k8s.io/kubernetes") == binaries.KUBERNETES_VERSION


def test_etcd_version_matches_go_mod() -> None:
    assert _required("go.etcd.io/etcd/server/v3") == binaries.ETCD_VERSION


def test_every_staging_module_is_replaced_by_the_matching_release() -> None:
    staging = binaries.KUBERNETES_VERSION.replace("v1.", "v0.", 1)
    replaces = re.findall(r"^\s*(k8s\.io/\S+) => (k8s\.io/\S+) (v\S+)$", GO_MOD.read_text(), re.M)
    assert len(replaces) >= 30
    for old, new, version in replaces:
        assert old == new
        assert version == staging, old


def test_bin_dir_follows_the_cache_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KUBENPU_CACHE_DIR", str(tmp_path))
    assert binaries.bin_dir() == tmp_path / f"k8s-{binaries.KUBERNETES_VERSION}" / "bin"
    assert binaries.missing() == list(binaries.BINARIES)


def test_the_built_kubectl_wins_then_the_one_on_path(tmp_path, monkeypatch) -> None:
    # The built kubectl has the server's minor version; a packaged one rarely does.
    on_path = tmp_path / "path"
    on_path.mkdir()
    monkeypatch.setenv("KUBENPU_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(on_path))
    assert binaries.kubectl() is None
    packaged = on_path / "kubectl"
    packaged.write_text("#!/bin/sh\n")
    packaged.chmod(0o755)
    assert binaries.kubectl() == str(packaged)
    built = binaries.bin_dir() / "kubectl"
    built.parent.mkdir(parents=True)
    built.write_text("#!/bin/sh\n")
    built.chmod(0o755)
    assert binaries.kubectl() == str(built)


def test_containerd_and_registry_versions_match_their_go_mods() -> None:
    hack = GO_MOD.parent
    containerd = (hack / "containerd" / "go.mod").read_text()
    registry = (hack / "registry" / "go.mod").read_text()
    assert (
        f"require github.com/containerd/containerd/v2 {binaries.CONTAINERD_VERSION}\n" in containerd
    )
    assert (
        f"require github.com/distribution/distribution/v3 {binaries.REGISTRY_VERSION}\n" in registry
    )


def test_node_bin_dir_follows_the_cache_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KUBENPU_CACHE_DIR", str(tmp_path))
    assert binaries.node_bin_dir().parent.parent == tmp_path
    assert set(binaries.NODE_BINARIES) <= set(binaries.node_missing())


def test_build_scripts_build_what_the_python_side_looks_for() -> None:
    hack = GO_MOD.parent
    control_plane = (hack / "build-control-plane.sh").read_text()
    assert f"binaries=({' '.join(binaries.BINARIES)})" in control_plane
    assert f"binaries=({' '.join(binaries.NODE_BINARIES)})" in (hack / "build-node.sh").read_text()
