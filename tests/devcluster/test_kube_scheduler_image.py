"""The kube-scheduler image of the Helm chart's secondary scheduler: the control plane's own
binary alone in one layer, cached by the binary's hash.

A stand-in file replaces the 80 MB binary (the builder copies bytes; it never runs them).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from kubenpu.devcluster import binaries, images, oci


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubenpu cache of its own, with a stand-in kube-scheduler binary in bin_dir()."""
    monkeypatch.setenv("KUBENPU_CACHE_DIR", str(tmp_path / "cache"))
    binary = binaries.bin_dir() / "kube-scheduler"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\x7fELF stand-in for kube-scheduler\n")
    binary.chmod(0o755)
    return binary


def test_the_image_is_the_binary_alone_on_path(cache: Path) -> None:
    (built,) = images.build(("kube-scheduler",))
    assert built.name == f"kubenpu.local/kube-scheduler:{binaries.KUBERNETES_VERSION}"
    assert built.name == images.kube_scheduler_image()
    assert not built.cached
    with oci.OciArchive(built.path) as archive:
        _, manifest_bytes = archive.manifest(built.name)
        manifest = json.loads(manifest_bytes)
        config = json.loads(archive.read(archive.blob_name(manifest["config"]["digest"])))
        (layer,) = manifest["layers"]
        data = gzip.decompress(archive.read(archive.blob_name(layer["digest"])))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        binary = members["usr/local/bin/kube-scheduler"]
        assert binary.mode == 0o755 and (binary.uid, binary.gid) == (0, 0)
        extracted = tar.extractfile(binary)
        assert extracted is not None and extracted.read() == cache.read_bytes()
    assert sorted(members) == ["tmp", "usr", "usr/local", "usr/local/bin", binary.name]
    assert members["tmp"].mode == 0o1777
    # The chart runs `kube-scheduler --config=...`: found on PATH, as a non-root user.
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/kube-scheduler"]
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in config["config"]["Env"]
    assert config["config"]["User"] == "65532:65532"
    assert config["architecture"] == "amd64" and config["os"] == "linux"


def test_a_new_binary_makes_a_new_image_and_drops_the_old(cache: Path) -> None:
    (first,) = images.build(("kube-scheduler",))
    (again,) = images.build(("kubenpu.local/kube-scheduler:whatever",))
    assert again.cached and again.path == first.path and again.digest == first.digest
    cache.write_bytes(b"\x7fELF another build\n")
    (second,) = images.build(("kube-scheduler",))
    assert not second.cached and second.digest != first.digest
    assert not first.path.exists()  # one archive per name in the cache


def test_without_the_binary_the_build_says_what_to_run(cache: Path) -> None:
    cache.unlink()
    with pytest.raises(images.ImageError, match=r"build-control-plane\.sh"):
        images.build(("kube-scheduler",))
