"""The dev cluster's training workload image: ``kubenpu.local/resnet50:<version>``.

The seed's ResNet-50 job (``examples/resnet50/train.py`` with ``npu_check.py``) built as
:mod:`kubenpu.devcluster.images` builds the others, in three layers so that editing the
script pushes only kilobytes: the shared Debian root filesystem; the pinned packages of
``examples/resnet50/requirements.txt`` installed with ``--require-hashes`` from the
wheelhouse (cached on its own, without TensorFlow's C++ headers and with its shared objects
stripped: -527 MB, only dynamic symbols are looked up); ``/app``. The dev cluster pushes it
as ``npu-registry.example.com/demo/npu-resnet50:1.0``, the image of
``examples/test-npu-pod.yaml`` and ``kubectl npu validate``.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

from kubenpu.devcluster import images
from kubenpu.devcluster.images import (
    DIST_PACKAGES,
    LOCAL_REGISTRY,
    NPU_CHECK_SOURCE,
    archive_path,
    base_rootfs,
    cached_build,
    inputs_hash,
    pip_platform_args,
    wheelhouse,
)
from kubenpu.devcluster.oci import (
    ImageConfig,
    ImageError,
    WrittenImage,
    tar_directory,
    write_oci_archive,
)

#: The workload's own version: the tag of the local image and of the registry's copy.
RESNET50_VERSION: Final = "1.0"
#: Where the dev cluster's registry keeps it (under ``npu-registry.example.com``), as the
#: seed's manifest names it.
REGISTRY_REPOSITORY: Final = "demo/npu-resnet50"
REGISTRY_TAG: Final = RESNET50_VERSION

_REPO_ROOT = Path(__file__).resolve().parents[3]
RESNET50_DIR: Final = _REPO_ROOT / "examples" / "resnet50"
RESNET50_SOURCE: Final = RESNET50_DIR / "train.py"
RESNET50_REQUIREMENTS: Final = RESNET50_DIR / "requirements.txt"

#: Paths inside the site directory left out of the image (see the module docstring).
PRUNED: Final = ("bin", "tensorflow/include")
#: The package whose shared objects are stripped. Only TensorFlow's: the other wheels'
#: libraries were rewritten by auditwheel (patchelf), which strip can corrupt, and are
#: stripped already.
STRIPPED_PACKAGE: Final = "tensorflow"
_STRIP: Final = ("strip", "--strip-unneeded")
_ELF_MAGIC: Final = b"\x7fELF"


def resnet50_image() -> str:
    """``kubenpu.local/resnet50:<version>``."""
    return f"{LOCAL_REGISTRY}/resnet50:{RESNET50_VERSION}"


def registry_reference(server: str = "npu-registry.example.com") -> str:
    """The image's name in the dev cluster's registry."""
    return f"{server}/{REGISTRY_REPOSITORY}:{REGISTRY_TAG}"


def resnet50_config() -> ImageConfig:
    """The image's run-time configuration."""
    return ImageConfig(
        entrypoint=("python3", "/app/train.py"),
        env=(
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
            # TensorFlow's C++ logging: warnings and errors only.
            "TF_CPP_MIN_LOG_LEVEL=2",
        ),
        working_dir="/app",
        labels={
            "org.opencontainers.image.title": "resnet50 (kubenpu example workload)",
            "org.opencontainers.image.version": RESNET50_VERSION,
        },
    )


def _sources() -> list[Path]:
    for path in (RESNET50_SOURCE, RESNET50_REQUIREMENTS, NPU_CHECK_SOURCE):
        if not path.is_file():
            raise ImageError(f"{path} is missing (run from a kubenpu source checkout)")
    return [RESNET50_SOURCE, NPU_CHECK_SOURCE]


def _deps_key() -> str:
    _sources()
    return inputs_hash(
        "resnet50-deps",
        RESNET50_REQUIREMENTS.read_bytes(),
        " ".join(pip_platform_args()),
        ",".join(PRUNED),
        " ".join(_STRIP),
        STRIPPED_PACKAGE,
        images.tool_version(["strip", "--version"]),
        # Byte code is what CPython 3.11 reads (any 3.11.x: one magic number).
        "cpython-3.11",
        DIST_PACKAGES,
    )


def resnet50_key(rootfs_key: str) -> str:
    """The hash naming the archive: every input of every layer and the config."""
    app = [path.read_bytes() for path in _sources()]
    return inputs_hash(
        "resnet50", rootfs_key, _deps_key(), *app, images.config_json(resnet50_config())
    )


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == _ELF_MAGIC


def shared_objects(package_dir: Path) -> list[Path]:
    """The ELF shared objects under ``package_dir`` (``*.so``, ``*.so.2``; no symlinks),
    sorted."""
    return sorted(
        p
        for p in package_dir.rglob("*.so*")
        if p.is_file() and not p.is_symlink() and ".so" in p.name and _is_elf(p)
    )


def _build_deps(dest: Path) -> None:
    """Install, prune, strip and byte-compile the packages; tar them to ``dest``."""
    python = images.host_python311()
    house = wheelhouse()
    house.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="resnet50-deps-", dir=dest.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        root.chmod(0o755)
        images.make_dirs(root, DIST_PACKAGES)
        site = root / DIST_PACKAGES
        quiet = ["--quiet", "--no-input"]
        wanted = ["--no-deps", "--require-hashes", "-r", str(RESNET50_REQUIREMENTS)]
        platform = pip_platform_args()
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        images.build_log(f"installing examples/resnet50/requirements.txt into /{DIST_PACKAGES}")
        images.pip_offline(
            python,
            [
                "install",
                *quiet,
                "--no-index",
                "--find-links",
                str(house),
                "--no-compile",
                "--target",
                str(site),
                *platform,
                *wanted,
            ],
            ["download", *quiet, "--dest", str(house), *platform, *wanted],
            "pip install (resnet50)",
            env,
        )
        for rel in PRUNED:
            shutil.rmtree(site / rel, ignore_errors=True)
        objects = shared_objects(site / STRIPPED_PACKAGE)
        images.build_log(f"stripping {len(objects)} shared objects of {STRIPPED_PACKAGE}")
        for chunk in range(0, len(objects), 64):
            images.run_tool([*_STRIP, *map(str, objects[chunk : chunk + 64])], "strip")
        images.build_log("byte-compiling")
        images.run_tool(
            [
                python,
                "-m",
                "compileall",
                "-q",
                "-j",
                "2",
                "--invalidation-mode",
                "unchecked-hash",
                "-s",
                str(root),
                "-p",
                "/",
                str(site),
            ],
            "compileall",
            # Sets and frozensets in constants are marshalled in hash order: a fixed seed
            # gives the same .pyc files on every build.
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        images.build_log("writing the package layer")
        partial = dest.with_name(dest.name + ".partial")
        try:
            tar_directory(root, partial)
            partial.rename(dest)
        finally:
            partial.unlink(missing_ok=True)


def deps_layer(directory: Path) -> tuple[Path, bool]:
    """The package layer's tar (built on a miss): ``(path, cached)``."""
    path = directory / "deps" / f"resnet50-deps-{_deps_key()}.tar"
    return cached_build(path, _build_deps)


def _build_resnet50(
    dest: Path, rootfs: Path, deps: Path, *, layer_cache: Path | None
) -> WrittenImage:
    with tempfile.TemporaryDirectory(prefix="resnet50-", dir=dest.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        root.chmod(0o755)
        images.make_dirs(root, "app")
        images.write_file(root / "app" / "train.py", RESNET50_SOURCE.read_bytes(), 0o755)
        images.write_file(root / "app" / "npu_check.py", NPU_CHECK_SOURCE.read_bytes(), 0o644)
        images.build_log("writing the resnet50 image")
        return write_oci_archive(
            [rootfs, deps, root],
            resnet50_config(),
            resnet50_image(),
            dest,
            layer_cache=layer_cache,
        )


#: The images this module builds, by the short names ``images.build`` takes.
WORKLOAD_IMAGES: Final = ("resnet50",)


def build_image(short: str, directory: Path, layer_cache: Path | None) -> tuple[str, Path, bool]:
    """Build (or find in the cache) the image ``short``: ``(name, archive, cached)``."""
    if short not in WORKLOAD_IMAGES:
        raise ImageError(f"unknown workload image {short!r}; known: {', '.join(WORKLOAD_IMAGES)}")
    rootfs_key = images.base_rootfs_key()
    name = resnet50_image()
    path = archive_path(name, resnet50_key(rootfs_key), directory)
    if path.is_file():
        return name, path, True
    rootfs, _ = base_rootfs(directory, key=rootfs_key)
    deps, _ = deps_layer(directory)
    path, cached = cached_build(
        path,
        functools.partial(_build_resnet50, rootfs=rootfs, deps=deps, layer_cache=layer_cache),
    )
    return name, path, cached
