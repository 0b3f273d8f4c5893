"""The container images of the real-node dev cluster, built without Docker or a registry.

Each is an OCI image-layout archive (one ``.tar``, written by :mod:`kubenpu.devcluster.oci`)
that ``ctr -n k8s.io images import`` loads into containerd and
:mod:`kubenpu.devcluster.registry_client` pushes to the dev cluster's registry:

* ``kubenpu.local/pause:<v>``: the pod sandbox, one static binary built here from
  ``hack/images/pause.c``;
* ``kubenpu.local/kubenpu:<version>``: a Debian root filesystem made with ``mmdebstrap``
  plus kubenpu and its pinned dependencies, as ``deploy/images/Dockerfile`` describes;
* ``kubenpu.local/npu-check:<version>``: the same Debian layer plus
  ``examples/npu-check/npu_check.py``, a workload that reports the NPUs it was given;
* ``kubenpu.local/kube-scheduler:<Kubernetes version>``: the control plane's static
  ``kube-scheduler`` binary (``binaries.bin_dir()``) alone in one layer, for the Helm
  chart's secondary scheduler;
* ``kubenpu.local/resnet50:<version>``: the seed's training job, built by
  :mod:`kubenpu.devcluster.workload_images` on the same Debian layer.

Every archive is cached in ``<cache_root>/images`` under a name carrying a hash of
everything it is built from, so a build whose inputs did not change does nothing.

CLI: ``python -m kubenpu.devcluster.images build [--only NAME]`` (and ``push``).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Final

from kubenpu.devcluster.binaries import KUBERNETES_VERSION, bin_dir, cache_root
from kubenpu.devcluster.oci import (
    ImageConfig,
    ImageError,
    OciArchive,
    WrittenImage,
    add_dir,
    canonical_json,
    sha256_file,
    split_reference,
    write_oci_archive,
)
from kubenpu.devcluster.registry_client import push
from kubenpu.errors import KubeNpuError

#: The registry part of every image built here: a name that resolves nowhere, so a pull
#: that misses the local store fails at once instead of going off the machine.
LOCAL_REGISTRY: Final = "kubenpu.local"
#: The sandbox image containerd is configured with (the Kubernetes release's pause tag).
PAUSE_IMAGE: Final = f"{LOCAL_REGISTRY}/pause:3.10"

# src/kubenpu/devcluster/images.py -> the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[3]
PAUSE_SOURCE: Final = _REPO_ROOT / "hack" / "images" / "pause.c"
NPU_CHECK_SOURCE: Final = _REPO_ROOT / "examples" / "npu-check" / "npu_check.py"

# Bump when the writer's output (or a builder) changes in a way the hashed inputs do not
# show, so that every cached archive is rebuilt once.
_FORMAT_VERSION: Final = "1"


# ---------------------------------------------------------------------------------------
# Content-hash cache
# ---------------------------------------------------------------------------------------


def images_dir() -> Path:
    """Where built archives are cached: ``<cache_root>/images``."""
    return cache_root() / "images"


def inputs_hash(*parts: bytes | str) -> str:
    """The 16-hex-digit hash that names a cache entry: sha256 over the length-prefixed
    parts (so that moving a byte from one part to the next changes it)."""
    digest = hashlib.sha256(_FORMAT_VERSION.encode())
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:16]


def archive_path(name: str, key: str, directory: Path | None = None) -> Path:
    """``<images_dir>/<repository's last part>-<tag>-<key>.oci.tar`` for ``name``."""
    repository, tag = split_reference(name)
    short = repository.rsplit("/", 1)[-1]
    return (directory or images_dir()) / f"{short}-{tag}-{key}.oci.tar"


_CACHE_NAME = re.compile(r"^(?P<stem>.+)-(?P<key>[0-9a-f]{16})(?P<suffix>\..+)$")


def cached_build(path: Path, build: Callable[[Path], object]) -> tuple[Path, bool]:
    """Return (``path``, True) when it exists; else run ``build(path)``, which must
    create it, and return (``path``, False).

    ``path`` is named ``<stem>-<16 hex>.<suffix>``; after a build, the other entries of
    the same stem and suffix (older inputs) are removed: each is up to hundreds of MB.
    """
    if path.is_file():
        return path, True
    path.parent.mkdir(parents=True, exist_ok=True)
    build(path)
    if not path.is_file():
        raise ImageError(f"building {path.name} produced no file")
    mine = _CACHE_NAME.match(path.name)
    if mine:
        for other in path.parent.glob(f"{glob_escape(mine['stem'])}-*"):
            theirs = _CACHE_NAME.match(other.name)
            if (
                other != path
                and theirs
                and (theirs["stem"], theirs["suffix"]) == (mine["stem"], mine["suffix"])
            ):
                other.unlink(missing_ok=True)
    return path, False


# ---------------------------------------------------------------------------------------
# The images
# ---------------------------------------------------------------------------------------


def build_log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def run_tool(argv: Sequence[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure raise ImageError with the end of its output."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)
    except OSError as exc:
        raise ImageError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result


def tool_version(argv: Sequence[str]) -> str:
    """A tool's version banner, for cache keys (a new compiler makes a new binary)."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ImageError(f"cannot run {argv[0]}: {exc}") from exc
    return (result.stdout + result.stderr).strip().splitlines()[0] if result.returncode == 0 else ""


def kubenpu_version() -> str:
    """kubenpu's version, from the source tree's pyproject.toml (what the wheel gets)."""
    pyproject = _REPO_ROOT / "pyproject.toml"
    if pyproject.is_file():
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    from kubenpu import __version__

    return __version__


def config_json(config: ImageConfig) -> str:
    return canonical_json(config.to_json()).decode()


def make_dirs(root: Path, *dirs: str) -> None:
    # Explicit 0755 at every level: the layer's directory entries replace the base's, so
    # a umask-dependent mode would change /usr or /etc for the whole image.
    for rel in dirs:
        path = root
        for part in Path(rel).parts:
            path = path / part
            path.mkdir(exist_ok=True)
            path.chmod(0o755)


def write_file(path: Path, data: bytes | str, mode: int) -> None:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


# ---- pause ----------------------------------------------------------------------------

_GCC_FLAGS: Final = ("-static", "-Os", "-s", "-Wall", "-Wextra")
PAUSE_CONFIG: Final = ImageConfig(
    entrypoint=("/pause",),
    # As the Kubernetes pause image: the sandbox needs no privilege at all.
    user="65535:65535",
    labels={"org.opencontainers.image.title": "pause (kubenpu dev cluster)"},
)


def _pause_key() -> str:
    if not PAUSE_SOURCE.is_file():
        raise ImageError(f"{PAUSE_SOURCE} is missing (run from a kubenpu source checkout)")
    return inputs_hash(
        "pause",
        PAUSE_SOURCE.read_bytes(),
        tool_version(["gcc", "--version"]),
        " ".join(_GCC_FLAGS),
        config_json(PAUSE_CONFIG),
    )


def _build_pause(dest: Path, *, layer_cache: Path | None) -> WrittenImage:
    with tempfile.TemporaryDirectory(prefix="pause-", dir=dest.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        root.chmod(0o755)
        binary = root / "pause"
        run_tool(
            ["gcc", *_GCC_FLAGS, "-o", str(binary), str(PAUSE_SOURCE)],
            "compiling hack/images/pause.c",
        )
        binary.chmod(0o755)
        return write_oci_archive([root], PAUSE_CONFIG, PAUSE_IMAGE, dest, layer_cache=layer_cache)


# ---- the Debian base layer ------------------------------------------------------------

DEBIAN_SUITE: Final = "bookworm"
#: Packages on top of the minbase set: the interpreter and the CA bundle.
DEBIAN_PACKAGES: Final = ("python3", "ca-certificates")
# Where the Debian python3 (3.11 in bookworm) looks for locally installed packages.
DIST_PACKAGES: Final = "usr/local/lib/python3.11/dist-packages"
# glibc of bookworm: the newest manylinux tag its python3 can load.
_DEBIAN_GLIBC_MINOR: Final = 36

_DOC_EXCLUDES: Final = (
    "path-exclude=/usr/share/doc/*",
    # The copyright files stay: they are the licences of what the image redistributes.
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
# Run after the packages are in: drop package lists, caches and logs (they only make the
# layer bigger and differ from build to build), the host's hostname and resolver that
# mmdebstrap copied in (the runtime provides both; the host's resolver must never reach a
# pod).
_CUSTOMIZE_HOOK: Final = (
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old '
    '"$1"/var/cache/ldconfig/aux-cache "$1"/var/log/* "$1"/etc/hostname; '
    ': > "$1"/etc/resolv.conf; chmod 0644 "$1"/etc/resolv.conf'
)


def apt_sources() -> Path:
    """The host's apt sources, handed to mmdebstrap as its mirror: the base layer comes
    from wherever this machine's apt is configured to fetch, named in no file here.
    ``$KUBENPU_APT_SOURCES`` overrides the choice."""
    explicit = os.environ.get("KUBENPU_APT_SOURCES")
    candidates = [Path(explicit)] if explicit else []
    candidates += [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for path in candidates:
        if path.is_file() and path.read_text().strip():
            return path
    raise ImageError(
        "no apt sources found (/etc/apt/sources.list.d/debian.sources, /etc/apt/sources.list); "
        "set KUBENPU_APT_SOURCES to a sources file"
    )


def _mmdebstrap_argv(out: str, sources: str) -> list[str]:
    argv = [
        "mmdebstrap",
        # minbase, not essential: it holds apt and with it libstdc++6, which the numpy,
        # scipy and grpcio wheels load from the system (as python:3.11-slim provides it).
        "--variant=minbase",
        "--include=" + ",".join(DEBIAN_PACKAGES),
        "--format=tar",
        # Merged /usr the debootstrap way: without it apt satisfies init-system-helpers'
        # dependency with the usrmerge package, which drags in perl (about 50 MB).
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        # No device nodes: the runtime mounts its own /dev.
        "--skip=output/dev",
    ]
    argv += [f"--dpkgopt={opt}" for opt in _DOC_EXCLUDES]
    argv += [f"--customize-hook={_CUSTOMIZE_HOOK}", DEBIAN_SUITE, out, sources]
    return argv


def base_rootfs_key() -> str:
    sources = apt_sources()
    return inputs_hash(
        "debian-rootfs",
        " ".join(_mmdebstrap_argv("OUT", str(sources))),
        sources.read_bytes(),
        ",".join(DEBIAN_PACKAGES),
        tool_version(["mmdebstrap", "--version"]),
    )


def base_rootfs(directory: Path | None = None, *, key: str | None = None) -> tuple[Path, bool]:
    """The Debian root filesystem tar shared by the kubenpu and npu-check images:
    ``(path, cached)``. Made with mmdebstrap (needs root, or user namespaces) on a miss;
    ``key`` is its inputs' hash when the caller has it already."""
    key = key or base_rootfs_key()
    path = (directory or images_dir()) / "rootfs" / f"debian-{DEBIAN_SUITE}-{key}.tar"

    def build(dest: Path) -> None:
        if shutil.which("mmdebstrap") is None:
            raise ImageError("mmdebstrap is not installed (apt-get install mmdebstrap)")
        partial = dest.with_name(dest.name + ".partial.tar")
        build_log(
            f"making the Debian {DEBIAN_SUITE} root filesystem with mmdebstrap (about a minute)"
        )
        # SOURCE_DATE_EPOCH: mmdebstrap clamps file times to it, so the tar depends on the
        # packages only.
        env = {**os.environ, "SOURCE_DATE_EPOCH": "0"}
        try:
            run_tool(_mmdebstrap_argv(str(partial), str(apt_sources())), "mmdebstrap", env=env)
            # --skip=output/dev leaves out /dev itself too; an image has it, empty, as the
            # mount point of the runtime's /dev.
            with tarfile.open(partial, mode="a", format=tarfile.GNU_FORMAT) as tar:
                add_dir(tar, "./dev/")
            partial.rename(dest)
        finally:
            partial.unlink(missing_ok=True)

    return cached_build(path, build)


def _read_base_file(rootfs: Path, name: str) -> str:
    with tarfile.open(rootfs, "r:") as tar:
        for candidate in (f"./{name}", name):
            with contextlib.suppress(KeyError):
                stream = tar.extractfile(candidate)
                if stream is not None:
                    return stream.read().decode()
    raise ImageError(f"{rootfs}: no /{name} in the Debian root filesystem")


# ---- kubenpu --------------------------------------------------------------------------

#: The extras installed into the image (as deploy/images/Dockerfile's EXTRAS default).
KUBENPU_EXTRAS: Final = ("nvml",)
KUBENPU_UID: Final = 65532
# What the wheel is built from: deploy/images/Dockerfile.dockerignore's list.
_WHEEL_INPUTS: Final = ("pyproject.toml", "README.md", "src")
_PIP_PLATFORMS: Final = (
    "manylinux2014_x86_64",
    # pip does not widen a manylinux_2_X tag to older ones, and numpy and scipy now ship
    # manylinux_2_27/2_28 wheels only: name every glibc up to bookworm's.
    *(f"manylinux_2_{minor}_x86_64" for minor in range(17, _DEBIAN_GLIBC_MINOR + 1)),
)


def kubenpu_image() -> str:
    """``kubenpu.local/kubenpu:<version>``."""
    return f"{LOCAL_REGISTRY}/kubenpu:{kubenpu_version()}"


def npu_check_image() -> str:
    """``kubenpu.local/npu-check:<version>``."""
    return f"{LOCAL_REGISTRY}/npu-check:{kubenpu_version()}"


def _kubenpu_config() -> ImageConfig:
    return ImageConfig(
        entrypoint=("kubenpu",),
        cmd=("--help",),
        env=(
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            # As the Dockerfile: the root filesystem is read-only at run time, and logs
            # must reach the kubelet at once.
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
        ),
        user=f"{KUBENPU_UID}:{KUBENPU_UID}",
        labels={
            "org.opencontainers.image.title": "kubenpu",
            "org.opencontainers.image.version": kubenpu_version(),
            "org.opencontainers.image.licenses": "Apache-2.0",
        },
    )


def _wheel_files() -> list[Path]:
    files = []
    for name in _WHEEL_INPUTS:
        path = _REPO_ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            for found in sorted(path.rglob("*")):
                rel = found.relative_to(path).parts
                skipped = found.suffix == ".pyc" or any(
                    p == "__pycache__" or p.endswith(".egg-info") for p in rel
                )
                if found.is_file() and not skipped:
                    files.append(found)
        else:
            raise ImageError(f"{path} is missing (run from a kubenpu source checkout)")
    return files


def pip_platform_args() -> list[str]:
    """pip's options that pick wheels for the image's interpreter (Debian's CPython 3.11
    on linux/amd64), not for the interpreter pip runs in."""
    argv = ["--only-binary=:all:"]
    for platform in _PIP_PLATFORMS:
        argv += ["--platform", platform]
    return [*argv, "--python-version", "3.11", "--implementation", "cp"]


def wheelhouse() -> Path:
    """``<cache_root>/pip/wheels``: every wheel the kubenpu image was built from.

    pip's own HTTP cache cannot be relied on (it keeps only responses that carry caching
    headers, and a proxy may strip them), so the wheels are downloaded here once and
    installed with ``--no-index``; a rebuild after a source change downloads nothing.
    """
    return cache_root() / "pip" / "wheels"


def pip_offline(
    python: str, offline: Sequence[str], fetch: Sequence[str], what: str, env: Mapping[str, str]
) -> None:
    """Run pip from the wheelhouse alone; when that fails (a wheel is missing), run
    ``pip download`` into it and try again."""
    try:
        run_tool([python, "-m", "pip", *offline], what, env=env)
        return
    except ImageError:
        pass
    build_log(f"{what}: downloading what the wheelhouse lacks into {wheelhouse()}")
    run_tool([python, "-m", "pip", *fetch], f"{what} (pip download)", env=env)
    run_tool([python, "-m", "pip", *offline], what, env=env)


def _kubenpu_key(rootfs_key: str) -> str:
    digest = hashlib.sha256()
    for path in _wheel_files():
        digest.update(str(path.relative_to(_REPO_ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return inputs_hash(
        "kubenpu",
        rootfs_key,
        digest.hexdigest(),
        " ".join(pip_platform_args()),
        ",".join(KUBENPU_EXTRAS),
        config_json(_kubenpu_config()),
    )


def host_python311() -> str:
    """A Python 3.11 to run pip and compileall with: its byte code must be what the
    Debian python3 (3.11) reads."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if found:
        return found
    raise ImageError(
        f"byte-compiling for the image needs Python 3.11; this is {sys.version.split()[0]} "
        "and no python3.11 is on PATH"
    )


def _console_scripts(site: Path) -> dict[str, str]:
    """name -> "module:function" for every console script the installed packages declare."""
    scripts: dict[str, str] = {}
    for entry_points in sorted(site.glob("*.dist-info/entry_points.txt")):
        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(entry_points.read_text())
        if parser.has_section("console_scripts"):
            for name, value in parser.items("console_scripts"):
                scripts[name] = value.strip()
    return scripts


def _script(target: str) -> str:
    module, _, func = target.partition(":")
    func = func.split("[", 1)[0].strip()
    head, _, rest = func.partition(".")
    call = f"{head}.{rest}" if rest else head
    return (
        "#!/usr/bin/python3\n"
        "import sys\n"
        f"from {module.strip()} import {head}\n"
        'if __name__ == "__main__":\n'
        f"    sys.exit({call}())\n"
    )


def _drop_direct_url(site: Path) -> None:
    """Remove kubenpu's ``direct_url.json`` (and its RECORD line): it records the path
    of the wheel in this build's temporary directory, a host path that differs on every
    build and would make the same sources give a different layer."""
    for info in site.glob("kubenpu-*.dist-info"):
        direct = info / "direct_url.json"
        if not direct.exists():
            continue
        direct.unlink()
        record = info / "RECORD"
        if record.exists():
            entry = f"{info.name}/direct_url.json,"
            lines = record.read_text().splitlines(keepends=True)
            record.write_text("".join(line for line in lines if not line.startswith(entry)))


def _build_kubenpu(dest: Path, rootfs: Path, *, layer_cache: Path | None) -> WrittenImage:
    python = host_python311()
    house = wheelhouse()
    house.mkdir(parents=True, exist_ok=True)
    quiet = ["--quiet", "--no-input"]
    offline = [*quiet, "--no-index", "--find-links", str(house)]
    with tempfile.TemporaryDirectory(prefix="kubenpu-", dir=dest.parent) as tmp:
        work = Path(tmp)
        # The wheel, built from a copy of what the Dockerfile's context holds: a build in
        # the checkout would leave build/ and *.egg-info behind in it.
        context = work / "context"
        context.mkdir()
        for path in _wheel_files():
            target = context / path.relative_to(_REPO_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        wheels = work / "wheels"
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        build_log("building the kubenpu wheel")
        # The build backend (pyproject's build-system.requires) comes from the wheelhouse too.
        pyproject = tomllib.loads((context / "pyproject.toml").read_text())
        backend = list(pyproject.get("build-system", {}).get("requires", []))
        pip_offline(
            python,
            ["wheel", *offline, "--no-deps", "--wheel-dir", str(wheels), str(context)],
            ["download", *quiet, "--only-binary=:all:", "--dest", str(house), *backend],
            "pip wheel",
            env,
        )
        built = sorted(wheels.glob("kubenpu-*.whl"))
        if len(built) != 1:
            raise ImageError(f"pip wheel left {len(built)} kubenpu wheels in {wheels}")
        requirement = f"kubenpu[{','.join(KUBENPU_EXTRAS)}] @ {built[0].as_uri()}"

        root = work / "root"
        root.mkdir()
        root.chmod(0o755)
        make_dirs(root, DIST_PACKAGES, "usr/local/bin", "etc")
        site = root / DIST_PACKAGES
        build_log(f"installing kubenpu and its dependencies into /{DIST_PACKAGES}")
        platform = pip_platform_args()
        pip_offline(
            python,
            ["install", *offline, "--no-compile", "--target", str(site), *platform, requirement],
            ["download", *quiet, "--dest", str(house), *platform, requirement],
            "pip install",
            env,
        )
        # pip download copies the kubenpu wheel itself in too: it is rebuilt every time.
        for stale in house.glob("kubenpu-*.whl"):
            stale.unlink()
        _drop_direct_url(site)

        # pip --target puts console scripts in <target>/bin with this host's interpreter
        # on the #! line; the image gets its own, for the Debian python3, in /usr/local/bin
        # (where the Dockerfile's pip install puts them).
        shutil.rmtree(site / "bin", ignore_errors=True)
        scripts = _console_scripts(site)
        if "kubenpu" not in scripts:
            raise ImageError("the kubenpu wheel declares no 'kubenpu' console script")
        for script, entry in sorted(scripts.items()):
            write_file(root / "usr/local/bin" / script, _script(entry), 0o755)

        build_log("byte-compiling")
        # unchecked-hash: a .pyc that records the source's mtime would never match the
        # layer's zero mtimes, and Python would recompile at every start (and fail to
        # write on the read-only root). -s/-p record the in-image paths in tracebacks.
        compile_argv = ["-q", "--invalidation-mode", "unchecked-hash", "-s", str(root), "-p", "/"]
        run_tool([python, "-m", "compileall", *compile_argv, str(site)], "compileall")

        # The unprivileged user: the base's own entries plus one line each, as useradd
        # --system would write them.
        passwd = _read_base_file(rootfs, "etc/passwd")
        group = _read_base_file(rootfs, "etc/group")
        if not re.search(r"^kubenpu:", passwd, re.M):
            passwd = passwd.rstrip("\n") + (
                f"\nkubenpu:x:{KUBENPU_UID}:{KUBENPU_UID}::/nonexistent:/usr/sbin/nologin\n"
            )
        if not re.search(r"^kubenpu:", group, re.M):
            group = group.rstrip("\n") + f"\nkubenpu:x:{KUBENPU_UID}:\n"
        write_file(root / "etc/passwd", passwd, 0o644)
        write_file(root / "etc/group", group, 0o644)

        build_log("writing the image")
        return write_oci_archive(
            [rootfs, root], _kubenpu_config(), kubenpu_image(), dest, layer_cache=layer_cache
        )


# ---- npu-check ------------------------------------------------------------------------


def _npu_check_config() -> ImageConfig:
    return ImageConfig(
        entrypoint=("python3", "/app/npu_check.py"),
        env=(
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
        ),
        working_dir="/app",
        labels={
            "org.opencontainers.image.title": "npu-check (kubenpu example workload)",
            "org.opencontainers.image.version": kubenpu_version(),
        },
    )


def _npu_check_key(rootfs_key: str) -> str:
    if not NPU_CHECK_SOURCE.is_file():
        raise ImageError(f"{NPU_CHECK_SOURCE} is missing (run from a kubenpu source checkout)")
    return inputs_hash(
        "npu-check", rootfs_key, NPU_CHECK_SOURCE.read_bytes(), config_json(_npu_check_config())
    )


def _build_npu_check(dest: Path, rootfs: Path, *, layer_cache: Path | None) -> WrittenImage:
    with tempfile.TemporaryDirectory(prefix="npu-check-", dir=dest.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        root.chmod(0o755)
        make_dirs(root, "app")
        write_file(root / "app" / "npu_check.py", NPU_CHECK_SOURCE.read_bytes(), 0o755)
        return write_oci_archive(
            [rootfs, root], _npu_check_config(), npu_check_image(), dest, layer_cache=layer_cache
        )


# ---- kube-scheduler -------------------------------------------------------------------

#: Where the binary sits in the image (as in registry.k8s.io/kube-scheduler), on PATH.
KUBE_SCHEDULER_PATH: Final = "usr/local/bin/kube-scheduler"


def kube_scheduler_image() -> str:
    """``kubenpu.local/kube-scheduler:<Kubernetes version>``: the Helm chart's secondary
    scheduler, the dev cluster's own static binary in one layer."""
    return f"{LOCAL_REGISTRY}/kube-scheduler:{KUBERNETES_VERSION}"


def _kube_scheduler_binary() -> Path:
    binary = bin_dir() / "kube-scheduler"
    if not binary.is_file():
        raise ImageError(f"{binary} is missing (run hack/build-control-plane.sh first)")
    return binary


def _kube_scheduler_config() -> ImageConfig:
    return ImageConfig(
        entrypoint=(f"/{KUBE_SCHEDULER_PATH}",),
        env=("PATH=/usr/local/bin:/usr/bin:/bin",),
        # No user database in the image: a numeric id, as the chart's pods set anyway.
        user="65532:65532",
        labels={
            "org.opencontainers.image.title": "kube-scheduler (kubenpu dev cluster)",
            "org.opencontainers.image.version": KUBERNETES_VERSION,
        },
    )


def _kube_scheduler_key() -> str:
    return inputs_hash(
        "kube-scheduler",
        sha256_file(_kube_scheduler_binary()),
        config_json(_kube_scheduler_config()),
    )


def _build_kube_scheduler(dest: Path, *, layer_cache: Path | None) -> WrittenImage:
    with tempfile.TemporaryDirectory(prefix="kube-scheduler-", dir=dest.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        root.chmod(0o755)
        make_dirs(root, str(Path(KUBE_SCHEDULER_PATH).parent), "tmp")
        (root / "tmp").chmod(0o1777)
        shutil.copyfile(_kube_scheduler_binary(), root / KUBE_SCHEDULER_PATH)
        (root / KUBE_SCHEDULER_PATH).chmod(0o755)
        return write_oci_archive(
            [root], _kube_scheduler_config(), kube_scheduler_image(), dest, layer_cache=layer_cache
        )


# ---- all of them ----------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    """One image after :func:`build`: where its archive is and whether it was cached."""

    name: str
    path: Path
    #: The manifest digest.
    digest: str
    cached: bool
    #: Size of the archive in bytes.
    size: int
    seconds: float


#: Short names accepted by ``build --only``.
IMAGE_NAMES: Final = ("pause", "kubenpu", "npu-check", "kube-scheduler", "resnet50")
#: Of those, the workloads :mod:`kubenpu.devcluster.workload_images` builds.
_WORKLOAD_IMAGES: Final = ("resnet50",)


def _archive_digest(path: Path) -> str:
    with OciArchive(path) as archive:
        return archive.manifest()[0].digest


def build(only: Sequence[str] | None = None) -> list[BuiltImage]:
    """Build (or find in the cache) the images named in ``only`` (short names from
    :data:`IMAGE_NAMES` or full references; default: all), in that order."""
    wanted: list[str] = []
    for name in only or IMAGE_NAMES:
        short = name.rsplit("/", 1)[-1].split(":", 1)[0]
        if short not in IMAGE_NAMES:
            raise ImageError(f"unknown image {name!r}; known: {', '.join(IMAGE_NAMES)}")
        if short not in wanted:
            wanted.append(short)
    directory = images_dir()
    layer_cache = directory / "layers"
    results = []
    rootfs: tuple[Path, str] | None = None
    for short in wanted:
        started = time.monotonic()
        if short == "pause":
            name = PAUSE_IMAGE
            path = archive_path(name, _pause_key(), directory)
            path, cached = cached_build(
                path, functools.partial(_build_pause, layer_cache=layer_cache)
            )
        elif short in _WORKLOAD_IMAGES:
            # Imported here: that module builds on this one.
            from kubenpu.devcluster import workload_images

            name, path, cached = workload_images.build_image(short, directory, layer_cache)
        elif short == "kube-scheduler":
            name = kube_scheduler_image()
            path, cached = cached_build(
                archive_path(name, _kube_scheduler_key(), directory),
                functools.partial(_build_kube_scheduler, layer_cache=layer_cache),
            )
        else:
            if rootfs is None:
                rootfs_key = base_rootfs_key()
                rootfs = (base_rootfs(directory, key=rootfs_key)[0], rootfs_key)
            rootfs_path, rootfs_key = rootfs
            if short == "kubenpu":
                name = kubenpu_image()
                path = archive_path(name, _kubenpu_key(rootfs_key), directory)
                builder: Callable[[Path], object] = functools.partial(
                    _build_kubenpu, rootfs=rootfs_path, layer_cache=layer_cache
                )
            else:
                name = npu_check_image()
                path = archive_path(name, _npu_check_key(rootfs_key), directory)
                builder = functools.partial(
                    _build_npu_check, rootfs=rootfs_path, layer_cache=layer_cache
                )
            path, cached = cached_build(path, builder)
        results.append(
            BuiltImage(
                name=name,
                path=path,
                digest=_archive_digest(path),
                cached=cached,
                size=path.stat().st_size,
                seconds=time.monotonic() - started,
            )
        )
    _prune_layer_cache(layer_cache, results)
    return results


def _prune_layer_cache(layer_cache: Path, keep: Sequence[BuiltImage]) -> None:
    """Drop compressed layers that no image of this build uses (only after a full set:
    a partial build may not know every image's layers)."""
    if len(keep) < len(IMAGE_NAMES) or not layer_cache.is_dir():
        return
    used: set[str] = set()
    for image in keep:
        with OciArchive(image.path) as archive:
            used.update(
                d["digest"].split(":", 1)[1] for d in json.loads(archive.manifest()[1])["layers"]
            )
    for meta in layer_cache.glob("*.json"):
        try:
            digest = json.loads(meta.read_text())["digest"].split(":", 1)[1]
        except (ValueError, KeyError):
            digest = ""
        if digest not in used:
            meta.with_suffix(".tar.gz").unlink(missing_ok=True)
            meta.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def _human(size: int) -> str:
    return f"{size / 1e6:.1f}MB"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kubenpu.devcluster.images build|push``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m kubenpu.devcluster.images",
        description="Build the dev cluster's container images as OCI archives; push one.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser(
        "build", help="build every image (cached by a hash of its inputs)"
    )
    build_cmd.add_argument(
        "--only", action="append", metavar="NAME", help=f"one of {', '.join(IMAGE_NAMES)}"
    )
    push_cmd = commands.add_parser("push", help="push an archive to an OCI registry (HTTPS)")
    push_cmd.add_argument("archive", type=Path)
    push_cmd.add_argument("registry", help="IP:PORT (names are never resolved)")
    push_cmd.add_argument("repository")
    push_cmd.add_argument("tag")
    push_cmd.add_argument("--username")
    push_cmd.add_argument(
        "--password-env",
        metavar="VAR",
        default="KUBENPU_REGISTRY_PASSWORD",
        help="environment variable holding the password (default %(default)s)",
    )
    push_cmd.add_argument("--cafile", type=Path)
    push_cmd.add_argument("--server-name", help="the name in the registry's certificate")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for image in build(args.only):
                state = "cached" if image.cached else "built"
                print(
                    f"{image.name} {image.path} {image.digest} {state} "
                    f"{_human(image.size)} {image.seconds:.1f}s"
                )
        else:
            digest = push(
                args.archive,
                args.registry,
                args.repository,
                args.tag,
                username=args.username,
                password=os.environ.get(args.password_env),
                cafile=args.cafile,
                server_name=args.server_name,
            )
            print(f"{args.registry}/{args.repository}:{args.tag} {digest}")
    except KubeNpuError as exc:
        print(f"images: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
