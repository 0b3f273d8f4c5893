"""The resnet50 workload image (kubenpu.devcluster.workload_images) and its script
(examples/resnet50/train.py), without TensorFlow: pins, cache keys, the layers and config of
the image (with stand-ins for the big layers), and train.py's pure parts and failure paths.
The real image is built and run on the real-node dev cluster (tests/realnodes/)."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import re
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from kubenpu.devcluster import images, oci, workload_images


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# ---- the requirements ------------------------------------------------------------------------

_PIN = re.compile(r"^(?P<name>[a-z0-9-]+)==(?P<version>[0-9][0-9A-Za-z.]*) \\$")


def _pins() -> dict[str, str]:
    lines = workload_images.RESNET50_REQUIREMENTS.read_text().splitlines()
    pins = {}
    for i, line in enumerate(lines):
        if not line or line.startswith("#") or line.startswith("    --hash"):
            continue
        match = _PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        assert re.fullmatch(r"    --hash=sha256:[0-9a-f]{64}", lines[i + 1]), line
        pins[match["name"]] = match["version"]
    return pins


def test_every_package_is_pinned_with_its_wheel_hash() -> None:
    pins = _pins()
    for needed in ("tensorflow-cpu", "keras", "numpy", "scikit-learn", "scipy", "protobuf"):
        assert needed in pins, needed
    # Left out on purpose (nothing imports them at run time; see the file's header).
    for left_out in ("libclang", "grpcio", "tensorboard", "setuptools", "wheel", "tensorflow"):
        assert left_out not in pins


# ---- cache keys and the image --------------------------------------------------------------


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Small stand-ins for the Debian and package layers (the real ones take minutes)."""
    rootfs = _tar(tmp_path / "rootfs.tar", {"./etc/os-release": b"ID=debian\n"})
    deps = _tar(
        tmp_path / "deps.tar",
        {"usr/local/lib/python3.11/dist-packages/tensorflow/__init__.py": b""},
    )
    monkeypatch.setattr(images, "base_rootfs_key", lambda: "rootfs-key")
    monkeypatch.setattr(workload_images, "base_rootfs", lambda directory, key: (rootfs, True))
    built: list[Path] = []

    def deps_layer(directory: Path) -> tuple[Path, bool]:
        built.append(directory)
        return deps, True

    monkeypatch.setattr(workload_images, "deps_layer", deps_layer)
    return tmp_path


def test_the_image_has_three_layers_and_runs_train_py(stand_ins: Path) -> None:
    out = stand_ins / "images"
    name, path, cached = workload_images.build_image("resnet50", out, None)
    assert (name, cached) == ("kubenpu.local/resnet50:1.0", False)
    assert path.parent == out and path.name.startswith("resnet50-1.0-")
    with oci.OciArchive(path) as archive:
        manifest = json.loads(archive.manifest(name)[1])
        config = json.loads(archive.read(archive.blob_name(manifest["config"]["digest"])))
        assert len(manifest["layers"]) == 3
        app = manifest["layers"][2]["digest"]
        with (
            archive.open(archive.blob_name(app)) as blob,
            tarfile.open(fileobj=blob, mode="r:gz") as tar,
        ):
            files = {m.name: m for m in tar.getmembers()}
            script = tar.extractfile(files["app/train.py"])
            assert script is not None
            assert script.read() == workload_images.RESNET50_SOURCE.read_bytes()
        assert "app/npu_check.py" in files and files["app/train.py"].mode == 0o755
    assert config["config"]["Entrypoint"] == ["python3", "/app/train.py"]
    assert "PYTHONUNBUFFERED=1" in config["config"]["Env"]
    assert config["config"]["WorkingDir"] == "/app"
    # Built once: the second time it is the cached archive.
    assert workload_images.build_image("resnet50", out, None) == (name, path, True)
    with pytest.raises(oci.ImageError, match="unknown workload image"):
        workload_images.build_image("resnet51", out, None)


def test_the_key_follows_the_script_and_the_requirements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "tool_version", lambda argv: "GNU strip 2.40")
    before = workload_images.resnet50_key("r")
    assert workload_images.resnet50_key("r") == before
    assert workload_images.resnet50_key("other rootfs") != before
    script = tmp_path / "train.py"
    script.write_text(workload_images.RESNET50_SOURCE.read_text() + "\n# changed\n")
    monkeypatch.setattr(workload_images, "RESNET50_SOURCE", script)
    assert workload_images.resnet50_key("r") != before
    deps_before = workload_images._deps_key()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(workload_images.RESNET50_REQUIREMENTS.read_text() + "# x\n")
    monkeypatch.setattr(workload_images, "RESNET50_REQUIREMENTS", requirements)
    assert workload_images._deps_key() != deps_before


def test_images_build_hands_resnet50_to_this_module(
    stand_ins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBENPU_CACHE_DIR", str(stand_ins / "cache"))
    assert "resnet50" in images.IMAGE_NAMES
    (built,) = images.build(["kubenpu.local/resnet50:1.0"])
    assert built.name == workload_images.resnet50_image()
    assert built.path.parent == stand_ins / "cache" / "images" and not built.cached
    assert built.digest.startswith("sha256:")


def test_only_elf_shared_objects_are_stripped(tmp_path: Path) -> None:
    pkg = tmp_path / "tensorflow"
    (pkg / "python").mkdir(parents=True)
    (pkg / "libtensorflow_cc.so.2").write_bytes(b"\x7fELF" + b"\0" * 60)
    (pkg / "python" / "_op.so").write_bytes(b"\x7fELF" + b"\0" * 60)
    (pkg / "python" / "fake.so.txt").write_bytes(b"not elf")
    (pkg / "python" / "readme.so.md").write_bytes(b"# no")
    (pkg / "link.so").symlink_to(pkg / "python" / "_op.so")
    assert workload_images.shared_objects(pkg) == [
        pkg / "libtensorflow_cc.so.2",
        pkg / "python" / "_op.so",
    ]


def test_registry_reference_is_the_seed_manifests_image() -> None:
    manifest = (workload_images._REPO_ROOT / "examples" / "test-npu-pod.yaml").read_text()
    assert f"image: {workload_images.registry_reference()}" in manifest
    assert workload_images.registry_reference() == "npu-registry.example.com/demo/npu-resnet50:1.0"


# ---- train.py ------------------------------------------------------------------------------


@functools.cache
def _train() -> ModuleType:
    """examples/resnet50/train.py as a module (a script; it imports npu_check itself)."""
    spec = importlib.util.spec_from_file_location("resnet50_train", workload_images.RESNET50_SOURCE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("resnet50_train", module)
    spec.loader.exec_module(module)
    return module


def test_cpu_budget_follows_the_cgroup_quota(tmp_path: Path, monkeypatch) -> None:
    t = _train()
    monkeypatch.setattr(t.os, "sched_getaffinity", lambda pid: set(range(8)))
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert t.cpu_budget(str(tmp_path)) == 2  # 1.5 CPUs: two threads
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert t.cpu_budget(str(tmp_path)) == 8
    (tmp_path / "cpu.max").unlink()
    v1 = tmp_path / "cpu,cpuacct"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert t.cpu_budget(str(tmp_path)) == 3
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert t.cpu_budget(str(tmp_path)) == 8


def test_top_k_accuracy_and_the_result_lines() -> None:
    t = _train()
    scores = [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.6, 0.3, 0.1]]
    labels = [1, 1, 0, 2]
    assert t.top_k_accuracy(scores, labels, 1) == 0.25
    assert t.top_k_accuracy(scores, labels, 2) == 0.75
    assert t.top_k_accuracy(scores, labels, 3) == 1.0
    with pytest.raises(ValueError):
        t.top_k_accuracy(scores, labels[:2], 1)
    line = t.result_line(0.9528, 1.0, "CPU")
    assert line == "top-1: 95.3%  top-5: 100.0%  on CPU"
    assert re.fullmatch(r"top-1: \d+\.\d%  top-5: \d+\.\d%  on .+", line)
    assert t.epoch_line(2, 5, 0.44941, 0.8716, 168.42, 8.31) == (
        "epoch 2/5  loss 0.4494  accuracy 87.2%  images/s 168.4  (8.3s)"
    )


def test_the_summary_fits_a_termination_message() -> None:
    t = _train()
    text = t.summary_text({"ok": False, "stage": "training", "error": "x" * 10000})
    assert len(text) <= t.SUMMARY_LIMIT
    data = json.loads(text)
    assert data["stage"] == "training" and data["error"].startswith("xxx")


def test_without_an_npu_it_stops_before_training(tmp_path: Path, capsys, monkeypatch) -> None:
    t = _train()
    monkeypatch.setenv("KUBENPU_DEVICES", "npu-0")
    monkeypatch.setenv("NPU_VISIBLE_DEVICES", "0")
    summary = tmp_path / "summary.json"
    assert t.main(["--dev", str(tmp_path), "--summary", str(summary)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("error no NPU device node under")
    assert "env NPU_VISIBLE_DEVICES=0" in out and "record npu-0" in out
    data = json.loads(summary.read_text())
    assert (data["ok"], data["stage"], data["match"], data["record"]) == (
        False,
        "npu-check",
        False,
        "npu-0",
    )
    assert data["error"].startswith("no NPU device node")


def test_a_training_failure_is_one_error_line_and_exit_1(tmp_path: Path, capsys) -> None:
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here: the run would train")
    t = _train()
    summary = tmp_path / "summary.json"
    assert t.main(["--no-npu-check", "--dev", str(tmp_path), "--summary", str(summary)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("warning no NPU device node")
    assert out[-1].startswith("error training failed: ModuleNotFoundError")
    assert json.loads(summary.read_text())["stage"] == "training"


def test_bad_options_exit_2() -> None:
    t = _train()
    with pytest.raises(SystemExit) as exc:
        t.parse_args(["--epochs", "0"])
    assert exc.value.code == 2
