"""The container images of the real-node dev cluster, built without Docker or a registry.

Three images, each written as an OCI image-layout archive (one ``.tar``) that
``ctr -n k8s.io images import`` loads into containerd:

* ``kubenpu.local/pause:<v>``: the pod sandbox, one static binary built here from
  ``hack/images/pause.c``;
* ``kubenpu.local/kubenpu:<version>``: a Debian root filesystem made with ``mmdebstrap``
  plus kubenpu and its pinned dependencies, as ``deploy/images/Dockerfile`` describes;
* ``kubenpu.local/npu-check:<version>``: the same Debian layer plus
  ``examples/npu-check/npu_check.py``, a workload that reports the NPUs it was given;
* ``kubenpu.local/kube-scheduler:<Kubernetes version>``: the control plane's static
  ``kube-scheduler`` binary (``binaries.bin_dir()``) alone in one layer, for the Helm
  chart's secondary scheduler.

Every archive is cached in ``<cache_root>/images`` under a name carrying a hash of
everything it is built from, so a build whose inputs did not change does nothing. The
writer is deterministic (sorted tar entries, zero timestamps and owners, gzip without a
time stamp): the same inputs give the same digests.

:func:`push` sends such an archive to a registry that speaks the OCI distribution API
over HTTPS, using only ``http.client`` and ``ssl``.

CLI: ``python -m kubenpu.devcluster.images build [--only NAME]`` (and ``push``).
"""

from __future__ import annotations

import argparse
import base64
import configparser
import contextlib
import functools
import gzip
import hashlib
import http.client
import io
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import IO, Any, Final

from kubenpu.devcluster.binaries import KUBERNETES_VERSION, bin_dir, cache_root
from kubenpu.errors import KubeNpuError

# ---------------------------------------------------------------------------------------
# Names and media types
# ---------------------------------------------------------------------------------------

#: The registry part of every image built here: a name that resolves nowhere, so a pull
#: that misses the local store fails at once instead of going off the machine.
LOCAL_REGISTRY: Final = "kubenpu.local"
#: The sandbox image containerd is configured with (the Kubernetes release's pause tag).
PAUSE_IMAGE: Final = f"{LOCAL_REGISTRY}/pause:3.10"

MEDIA_TYPE_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
#: The annotation the OCI image-layout spec names images by.
ANNOTATION_REF_NAME: Final = "org.opencontainers.image.ref.name"
#: The annotation containerd's importer takes the full image name from.
ANNOTATION_CONTAINERD_NAME: Final = "io.containerd.image.name"

# Bump when the writer's output (or a builder) changes in a way the hashed inputs do not
# show, so that every cached archive is rebuilt once.
_FORMAT_VERSION: Final = "1"
# One fixed time for every image: "created" must be a time, and a real one would make
# two builds of the same inputs differ.
_EPOCH: Final = "1970-01-01T00:00:00Z"
# Level 6 is zlib's default: within a few percent of 9 in size at a fraction of the
# time, which matters for the few hundred megabytes of the kubenpu layer on two cores.
_GZIP_LEVEL: Final = 6
_CHUNK: Final = 1 << 20

# src/kubenpu/devcluster/images.py -> the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[3]
PAUSE_SOURCE: Final = _REPO_ROOT / "hack" / "images" / "pause.c"
NPU_CHECK_SOURCE: Final = _REPO_ROOT / "examples" / "npu-check" / "npu_check.py"


class ImageError(KubeNpuError):
    """An image could not be built or read (a tool failed, an archive is malformed)."""


class PushError(ImageError):
    """A registry refused a push, or answered something the distribution API does not."""


# ---------------------------------------------------------------------------------------
# Deterministic tar
# ---------------------------------------------------------------------------------------


def _tree(root: Path, prefix: str = "") -> Iterator[str]:
    """Relative paths under root, each directory before its contents, names sorted."""
    for entry in sorted(os.scandir(root / prefix if prefix else root), key=lambda e: e.name):
        rel = f"{prefix}{entry.name}"
        yield rel
        if entry.is_dir(follow_symlinks=False):
            yield from _tree(root, rel + "/")


def tar_directory(root: Path, dest: Path) -> Path:
    """Write the tree under ``root`` as an uncompressed tar at ``dest`` and return ``dest``.

    Entries are named relative to ``root`` (``usr/bin/x``), in sorted order with each
    directory before its contents; every mtime is 0, every owner 0:0 without names.
    Permission bits, symlinks and hard links are kept; sockets are left out. The GNU
    format spells long names without pax headers, which would carry times.
    """
    with (
        dest.open("wb") as out,
        tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for rel in _tree(root):
            path = root / rel
            info = tar.gettarinfo(str(path), arcname=rel)
            if info is None:  # a socket: nothing a container image can carry
                continue
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with path.open("rb") as src:
                    tar.addfile(info, src)
            else:
                tar.addfile(info)
    return dest


# ---------------------------------------------------------------------------------------
# OCI image layout
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """The run-time part of an image config (what ``docker inspect`` calls Config)."""

    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    #: ``NAME=value`` strings, in order.
    env: Sequence[str] = ()
    working_dir: str = ""
    #: ``uid[:gid]`` or a user name from the image's /etc/passwd; empty is root.
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The config object of the OCI image config, empty fields left out."""
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            out["Cmd"] = list(self.cmd)
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(sorted(self.labels.items()))
        return out


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and size."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        """The descriptor as the OCI JSON documents spell it."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class WrittenImage:
    """What :func:`write_oci_archive` wrote."""

    path: Path
    name: str
    #: The manifest digest: what a registry and containerd know the image by.
    digest: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    #: sha256 of each uncompressed layer, as in the config's rootfs.
    diff_ids: tuple[str, ...]


_REFERENCE = re.compile(
    r"^(?P<repository>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+)"
    r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$"
)


def split_reference(name: str) -> tuple[str, str]:
    """``kubenpu.local/pause:3.10`` -> (``kubenpu.local/pause``, ``3.10``).

    The reference must name a registry host, a repository and a tag (no digest): that is
    what containerd stores an imported image under.
    """
    match = _REFERENCE.match(name)
    if not match:
        raise ImageError(
            f"image name {name!r} is not REGISTRY/REPOSITORY:TAG (lower-case repository, "
            "e.g. kubenpu.local/pause:3.10)"
        )
    return match.group("repository"), match.group("tag")


def _canonical(obj: Any) -> bytes:
    # Sorted keys, no spaces: one spelling per document, so one digest.
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    """A sink that hashes and counts what passes through on its way to a file."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self._out.write(view)
        self.size += len(view)
        return len(view)


def _gzip_layer(tar_path: Path, out_path: Path) -> tuple[str, str, int]:
    """Compress a layer: (diff_id, blob digest, blob size), both read in one pass."""
    diff = hashlib.sha256()
    with tar_path.open("rb") as src, out_path.open("wb") as raw:
        sink = _HashingWriter(raw)
        # filename="" and mtime=0: the gzip header otherwise records both, and the same
        # layer would get a new digest on every build.
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=sink, compresslevel=_GZIP_LEVEL, mtime=0
        ) as gz:
            while chunk := src.read(_CHUNK):
                diff.update(chunk)
                gz.write(chunk)
    return "sha256:" + diff.hexdigest(), "sha256:" + sink.digest.hexdigest(), sink.size


def _layer_blob(tar_path: Path, blobs: Path, layer_cache: Path | None) -> tuple[str, Descriptor]:
    """Put the gzipped layer into ``blobs``; return (diff_id, descriptor).

    With a layer cache, a layer compressed before (same uncompressed digest) is copied
    instead: the shared Debian layer is then compressed once, not once per image. The
    result is the same either way because the compression is deterministic.
    """
    if layer_cache is None:
        return _compress_into(tar_path, blobs)
    diff_id = _sha256_file(tar_path)
    hex_id = diff_id.split(":", 1)[1]
    cached_blob = layer_cache / f"{hex_id}.tar.gz"
    cached_meta = layer_cache / f"{hex_id}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        meta = json.loads(cached_meta.read_text())
        if cached_blob.stat().st_size == meta["size"]:
            shutil.copyfile(cached_blob, blobs / meta["digest"].split(":", 1)[1])
            return diff_id, Descriptor(MEDIA_TYPE_LAYER_GZIP, meta["digest"], meta["size"])
    diff_id, desc = _compress_into(tar_path, blobs)
    layer_cache.mkdir(parents=True, exist_ok=True)
    partial = layer_cache / f"{hex_id}.partial"
    shutil.copyfile(blobs / desc.digest.split(":", 1)[1], partial)
    partial.rename(cached_blob)
    # The metadata last: a blob without it is never taken for a complete one.
    cached_meta.write_text(json.dumps({"digest": desc.digest, "size": desc.size}))
    return diff_id, desc


def _compress_into(tar_path: Path, blobs: Path) -> tuple[str, Descriptor]:
    scratch = blobs / ".layer.partial"
    diff_id, digest, size = _gzip_layer(tar_path, scratch)
    scratch.rename(blobs / digest.split(":", 1)[1])
    return diff_id, Descriptor(MEDIA_TYPE_LAYER_GZIP, digest, size)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def write_oci_archive(
    layers: Sequence[Path],
    config: ImageConfig,
    name: str,
    dest: Path,
    *,
    layer_cache: Path | None = None,
) -> WrittenImage:
    """Write an OCI image-layout archive of one linux/amd64 image to ``dest``.

    ``layers`` go bottom first; each is an uncompressed tar file or a directory (tarred
    with :func:`tar_directory`). ``name`` is the full reference (``kubenpu.local/x:1``);
    ``index.json`` carries it in both the OCI ref-name annotation and the one containerd's
    importer reads, so ``ctr images import`` stores the image under exactly that name.
    The archive appears at ``dest`` only when complete.
    """
    split_reference(name)  # refuse a bad name before any work
    if not layers:
        raise ImageError(f"{name}: an image needs at least one layer")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".oci-", dir=dest.parent) as tmp:
        work = Path(tmp)
        blobs = work / "blobs"
        blobs.mkdir()
        diff_ids: list[str] = []
        layer_descs: list[Descriptor] = []
        for i, layer in enumerate(layers):
            if layer.is_dir():
                tar_path = tar_directory(layer, work / f"layer-{i}.tar")
            elif layer.is_file():
                tar_path = layer
            else:
                raise ImageError(f"{name}: layer {layer} is neither a tar file nor a directory")
            diff_id, desc = _layer_blob(tar_path, blobs, layer_cache)
            if tar_path != layer:
                tar_path.unlink()
            diff_ids.append(diff_id)
            layer_descs.append(desc)

        config_doc = {
            "architecture": "amd64",
            "os": "linux",
            "created": _EPOCH,
            "config": config.to_json(),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config_bytes = _canonical(config_doc)
        config_desc = Descriptor(
            MEDIA_TYPE_CONFIG,
            "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
            len(config_bytes),
        )
        manifest_bytes = _canonical(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_MANIFEST,
                "config": config_desc.to_json(),
                "layers": [d.to_json() for d in layer_descs],
            }
        )
        manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        index_bytes = _canonical(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_INDEX,
                "manifests": [
                    {
                        "mediaType": MEDIA_TYPE_MANIFEST,
                        "digest": manifest_digest,
                        "size": len(manifest_bytes),
                        "platform": {"architecture": "amd64", "os": "linux"},
                        "annotations": {
                            ANNOTATION_CONTAINERD_NAME: name,
                            ANNOTATION_REF_NAME: name,
                        },
                    }
                ],
            }
        )

        partial = work / "archive.tar"
        with (
            partial.open("wb") as out,
            tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar,
        ):
            # The small documents first, so a reader finds the index without scanning
            # past hundreds of megabytes of layers.
            _add_bytes(tar, "oci-layout", _canonical({"imageLayoutVersion": "1.0.0"}))
            _add_bytes(tar, "index.json", index_bytes)
            _add_dir(tar, "blobs/")
            _add_dir(tar, "blobs/sha256/")
            small = {
                manifest_digest: manifest_bytes,
                config_desc.digest: config_bytes,
            }
            for digest in sorted(small):
                _add_bytes(tar, f"blobs/sha256/{digest.split(':', 1)[1]}", small[digest])
            for desc in sorted({d.digest: d for d in layer_descs}.values(), key=lambda d: d.digest):
                blob = blobs / desc.digest.split(":", 1)[1]
                info = tarfile.TarInfo(f"blobs/sha256/{blob.name}")
                info.size = desc.size
                info.mode = 0o644
                with blob.open("rb") as src:
                    tar.addfile(info, src)
        os.replace(partial, dest)
    return WrittenImage(
        path=dest,
        name=name,
        digest=manifest_digest,
        config=config_desc,
        layers=tuple(layer_descs),
        diff_ids=tuple(diff_ids),
    )


class OciArchive:
    """Read access to an archive written by :func:`write_oci_archive` (or any OCI
    image-layout tar with one image manifest per name). Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # Held open for the object's life (blobs are streamed from it); close() ends it.
            self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115
        except (OSError, tarfile.TarError) as exc:
            raise ImageError(f"{path}: not a readable tar archive: {exc}") from exc
        # Some writers prefix "./"; the layout spec names the files without it.
        self._members = {m.name.removeprefix("./").rstrip("/"): m for m in self._tar}

    def __enter__(self) -> OciArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying tar file."""
        self._tar.close()

    def names(self) -> list[str]:
        """The archive's member names (without a leading ``./``)."""
        return list(self._members)

    def read(self, name: str) -> bytes:
        """A member's bytes (for the small documents: index, manifest, config)."""
        with self.open(name) as f:
            return f.read()

    def open(self, name: str) -> IO[bytes]:
        """A member as a readable stream (for layers)."""
        member = self._members.get(name)
        stream = self._tar.extractfile(member) if member is not None else None
        if stream is None:
            raise ImageError(f"{self.path}: no file {name!r} in the archive")
        return stream

    def blob_name(self, digest: str) -> str:
        """The member holding the blob with ``digest``."""
        algorithm, _, hex_digest = digest.partition(":")
        return f"blobs/{algorithm}/{hex_digest}"

    def blob_size(self, digest: str) -> int:
        """The size in bytes of the blob with ``digest``."""
        member = self._members.get(self.blob_name(digest))
        if member is None:
            raise ImageError(f"{self.path}: blob {digest} is missing")
        return member.size

    def index(self) -> dict[str, Any]:
        """``index.json``, parsed."""
        doc: dict[str, Any] = json.loads(self.read("index.json"))
        return doc

    def manifest(self, name: str | None = None) -> tuple[Descriptor, bytes]:
        """The image manifest's descriptor and bytes: the one annotated with ``name``, or
        the only one when ``name`` is None."""
        entries = self.index().get("manifests", [])
        if name is not None:
            entries = [
                m
                for m in entries
                if name
                in (
                    m.get("annotations", {}).get(ANNOTATION_CONTAINERD_NAME),
                    m.get("annotations", {}).get(ANNOTATION_REF_NAME),
                )
            ]
        if len(entries) != 1:
            what = f"named {name!r}" if name else "in all"
            raise ImageError(
                f"{self.path}: expected one image manifest {what}, found {len(entries)}"
            )
        entry = entries[0]
        if entry.get("mediaType") != MEDIA_TYPE_MANIFEST:
            raise ImageError(f"{self.path}: {entry.get('mediaType')} is not an image manifest")
        data = self.read(self.blob_name(entry["digest"]))
        if "sha256:" + hashlib.sha256(data).hexdigest() != entry["digest"]:
            raise ImageError(f"{self.path}: manifest {entry['digest']} does not match its bytes")
        return Descriptor(MEDIA_TYPE_MANIFEST, entry["digest"], len(data)), data


# ---------------------------------------------------------------------------------------
# Pushing to a registry (OCI distribution API)
# ---------------------------------------------------------------------------------------

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_address(address: str) -> tuple[str, int]:
    """``10.0.0.5:5000`` or ``[fd00::1]:5000`` -> (ip, port). Names are refused: nothing
    here ever resolves one, so no lookup can send traffic anywhere unexpected."""
    host, sep, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ip = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        ip, port = None, 0
    if not sep or ip is None or not 0 < port < 65536:
        raise PushError(f"registry address {address!r} is not IP:PORT (names are never resolved)")
    return str(ip), port


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="https://...",service="x"`` -> (``bearer``, {realm, service}).

    Only the first challenge is read: registries send one.
    """
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


# A body for a request: bytes, or something that opens a fresh stream (so a request can be
# sent again after an authentication challenge) together with its length.
_Body = bytes | tuple[Callable[[], IO[bytes]], int] | None


@dataclass
class _Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class _Connection(http.client.HTTPSConnection):
    """HTTPS to an IP address, verifying the certificate against ``server_name`` (the
    IP itself, or the name the certificate was issued for)."""

    def __init__(
        self, host: str, port: int, *, tls: ssl.SSLContext, server_name: str, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=tls)
        self._tls = tls
        self._server_name = server_name
        self.blocksize = _CHUNK

    def connect(self) -> None:
        # socket.create_connection with an IP literal does no name lookup.
        self.sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


class _RegistryClient:
    """One repository on one registry: requests with authentication handled."""

    def __init__(
        self,
        address: str,
        repository: str,
        *,
        username: str | None,
        password: str | None,
        cafile: str | None,
        server_name: str | None,
        timeout: float,
    ) -> None:
        self.host, self.port = parse_address(address)
        self.repository = repository
        self.username = username
        self.password = password
        self.server_name = server_name or self.host
        self.timeout = timeout
        self.tls = ssl.create_default_context(cafile=cafile)
        self._authorization: str | None = None
        self._host_header = (
            f"{server_name}:{self.port}"
            if server_name
            else (f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}")
        )

    def _send(
        self,
        host: str,
        port: int,
        server_name: str,
        method: str,
        target: str,
        body: _Body,
        headers: Mapping[str, str],
    ) -> _Response:
        conn = _Connection(host, port, tls=self.tls, server_name=server_name, timeout=self.timeout)
        try:
            send_headers = dict(headers)
            stream: IO[bytes] | None = None
            payload: bytes | IO[bytes] | None
            if isinstance(body, tuple):
                opener, length = body
                stream = payload = opener()
                send_headers["Content-Length"] = str(length)
            else:
                payload = body
                if body is not None or method in ("POST", "PUT"):
                    send_headers["Content-Length"] = str(len(body or b""))
            try:
                conn.request(method, target, body=payload, headers=send_headers)
                response = conn.getresponse()
                data = response.read()
            finally:
                if stream is not None:
                    stream.close()
            return _Response(response.status, response.headers, data)
        except (OSError, http.client.HTTPException) as exc:
            raise PushError(f"{method} https://{host}:{port}{target}: {exc}") from exc
        finally:
            conn.close()

    def request(
        self,
        method: str,
        target: str,
        *,
        body: _Body = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Response:
        """Send one request to the registry; on a 401, answer the challenge once and
        send it again."""
        for attempt in range(2):
            send = {"Host": self._host_header, "User-Agent": "kubenpu-images/1"}
            send.update(headers or {})
            if self._authorization:
                send["Authorization"] = self._authorization
            response = self._send(
                self.host, self.port, self.server_name, method, target, body, send
            )
            if response.status != 401:
                return response
            if attempt == 0:
                self._authenticate(response.headers.get("WWW-Authenticate", ""), method, target)
        scheme = (self._authorization or "none").split(" ", 1)[0]
        if scheme == "Basic":
            raise PushError(
                f"registry {self.host}:{self.port} refused the credentials of user "
                f"{self.username!r} ({method} {target}: 401)"
            )
        raise PushError(
            f"registry {self.host}:{self.port} refused the token it issued ({method} {target}: "
            f"401; may user {self.username!r} push to {self.repository}?)"
        )

    def _basic(self) -> str:
        if self.username is None or self.password is None:
            raise PushError(
                f"registry {self.host}:{self.port} asks for credentials and none were given "
                "(--username and a password)"
            )
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def _authenticate(self, challenge: str, method: str, target: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self._authorization and self._authorization.startswith("Basic "):
                raise PushError(
                    f"registry {self.host}:{self.port} refused the credentials of user "
                    f"{self.username!r} ({method} {target}: 401)"
                )
            self._authorization = self._basic()
        elif scheme == "bearer":
            self._authorization = f"Bearer {self._token(params)}"
        else:
            raise PushError(
                f"{method} {target}: 401 without a Basic or Bearer challenge "
                f"(WWW-Authenticate: {challenge!r})"
            )

    def _token(self, params: Mapping[str, str]) -> str:
        """Fetch a token from the challenge's realm (the Docker token flow)."""
        realm = params.get("realm", "")
        url = urllib.parse.urlsplit(realm)
        if url.scheme != "https" or not url.hostname:
            raise PushError(f"token realm {realm!r} is not an https:// URL")
        host = url.hostname
        port = url.port or 443
        try:
            host = str(ipaddress.ip_address(host))
            # The registry's own address: verify as the registry is verified.
            server_name = self.server_name if host == self.host else host
        except ValueError:
            # A name: it can only be the registry's own certificate name, which we were
            # told how to reach; any other would need a lookup, which is never done.
            if host != self.server_name:
                raise PushError(
                    f"token realm {realm!r} names host {host!r}, which is neither an IP "
                    f"address nor the registry's server name ({self.server_name}); names "
                    "are never resolved"
                ) from None
            server_name, host = host, self.host
        scopes = [f"repository:{self.repository}:pull,push"]
        if params.get("scope") and params["scope"] not in scopes:
            scopes.append(params["scope"])
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in scopes]
        target = (url.path or "/") + "?" + urllib.parse.urlencode(query)
        if url.query:
            target += "&" + url.query
        headers = {"Host": url.netloc, "User-Agent": "kubenpu-images/1"}
        if self.username is not None and self.password is not None:
            headers["Authorization"] = self._basic()
        response = self._send(host, port, server_name, "GET", target, None, headers)
        if response.status != 200:
            raise PushError(
                f"token server {realm} answered {response.status}: {_error_text(response)}"
            )
        try:
            doc = json.loads(response.body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise PushError(f"token server {realm} sent no token")
        return token


def _error_text(response: _Response) -> str:
    """The registry's error message(s), from the distribution API's error body."""
    try:
        errors = json.loads(response.body).get("errors") or []
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        text = ""
    return text or response.body[:200].decode("utf-8", "replace") or "(no body)"


def _expect(response: _Response, what: str, *statuses: int) -> _Response:
    if response.status not in statuses:
        raise PushError(f"{what}: registry answered {response.status}: {_error_text(response)}")
    return response


def _upload_target(location: str, digest: str) -> str:
    """The PUT target that completes an upload: Location's path and query plus the digest.

    Only the path is taken from an absolute Location: the request still goes to the
    registry's address, since following a host name would mean resolving it.
    """
    url = urllib.parse.urlsplit(location)
    query = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
    query.append(("digest", digest))
    return (url.path or "/") + "?" + urllib.parse.urlencode(query)


def push(
    archive: Path,
    registry: str,
    repository: str,
    tag: str,
    *,
    username: str | None = None,
    password: str | None = None,
    cafile: Path | str | None = None,
    server_name: str | None = None,
    timeout: float = 120.0,
) -> str:
    """Push the image in ``archive`` to ``https://<registry>/<repository>:<tag>``.

    ``registry`` is ``IP:PORT``: names are never resolved. Blobs the registry already has
    (HEAD answers 200) are skipped; the others go up as monolithic uploads (POST, then
    PUT with the digest); the manifest goes last, as ``application/vnd.oci.image.manifest
    .v1+json``. Authentication follows the registry's challenge: Basic with the given
    credentials, or Bearer with a token fetched from the challenge's realm (using the
    credentials, if any). ``cafile`` is the CA bundle to trust (default: the system's);
    ``server_name`` is the name the registry's certificate was issued for when it holds
    no IP address entry. Returns the manifest digest.
    """
    if not _REPOSITORY.match(repository):
        raise PushError(f"repository {repository!r} is not a valid repository name")
    if not _TAG.match(tag):
        raise PushError(f"tag {tag!r} is not a valid tag")
    client = _RegistryClient(
        registry,
        repository,
        username=username,
        password=password,
        cafile=str(cafile) if cafile is not None else None,
        server_name=server_name,
        timeout=timeout,
    )
    with OciArchive(archive) as image:
        manifest_desc, manifest = image.manifest()
        doc = json.loads(manifest)
        blobs = [doc["config"], *doc.get("layers", [])]
        # The version check: a 200 or a 401 (answered once here, before any large body).
        _expect(client.request("GET", "/v2/"), f"GET {registry}/v2/", 200)
        base = f"/v2/{repository}"
        for blob in blobs:
            digest = blob["digest"]
            head = client.request("HEAD", f"{base}/blobs/{digest}")
            if head.status == 200:
                continue
            _expect(head, f"HEAD {base}/blobs/{digest}", 404)
            started = _expect(
                client.request("POST", f"{base}/blobs/uploads/", body=b""),
                f"POST {base}/blobs/uploads/",
                202,
            )
            location = started.headers.get("Location")
            if not location:
                raise PushError(f"POST {base}/blobs/uploads/: 202 without a Location")
            size = image.blob_size(digest)
            name = image.blob_name(digest)
            _expect(
                client.request(
                    "PUT",
                    _upload_target(location, digest),
                    body=(lambda name=name: image.open(name), size),
                    headers={"Content-Type": "application/octet-stream"},
                ),
                f"PUT blob {digest}",
                201,
            )
        put = _expect(
            client.request(
                "PUT",
                f"{base}/manifests/{tag}",
                body=manifest,
                headers={"Content-Type": MEDIA_TYPE_MANIFEST},
            ),
            f"PUT {base}/manifests/{tag}",
            201,
        )
    stored = put.headers.get("Docker-Content-Digest")
    if stored and stored != manifest_desc.digest:
        raise PushError(
            f"registry stored the manifest as {stored}, not {manifest_desc.digest} (it "
            "rewrote the manifest)"
        )
    return manifest_desc.digest


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


def _log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def _run(argv: Sequence[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure raise ImageError with the end of its output."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)
    except OSError as exc:
        raise ImageError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result


def _tool_version(argv: Sequence[str]) -> str:
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


def _config_json(config: ImageConfig) -> str:
    return _canonical(config.to_json()).decode()


def _mkdirs(root: Path, *dirs: str) -> None:
    # Explicit 0755 at every level: the layer's directory entries replace the base's, so
    # a umask-dependent mode would change /usr or /etc for the whole image.
    for rel in dirs:
        path = root
        for part in Path(rel).parts:
            path = path / part
            path.mkdir(exist_ok=True)
            path.chmod(0o755)


def _write(path: Path, data: bytes | str, mode: int) -> None:
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
        _tool_version(["gcc", "--version"]),
        " ".join(_GCC_FLAGS),
        _config_json(PAUSE_CONFIG),
    )


def _build_pause(dest: Path, *, layer_cache: Path | None) -> WrittenImage:
    with tempfile.TemporaryDirectory(prefix="pause-", dir=dest.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        root.chmod(0o755)
        binary = root / "pause"
        _run(
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


def _rootfs_key() -> str:
    sources = apt_sources()
    return inputs_hash(
        "debian-rootfs",
        " ".join(_mmdebstrap_argv("OUT", str(sources))),
        sources.read_bytes(),
        ",".join(DEBIAN_PACKAGES),
        _tool_version(["mmdebstrap", "--version"]),
    )


def base_rootfs(directory: Path | None = None, *, key: str | None = None) -> tuple[Path, bool]:
    """The Debian root filesystem tar shared by the kubenpu and npu-check images:
    ``(path, cached)``. Made with mmdebstrap (needs root, or user namespaces) on a miss;
    ``key`` is its inputs' hash when the caller has it already."""
    key = key or _rootfs_key()
    path = (directory or images_dir()) / "rootfs" / f"debian-{DEBIAN_SUITE}-{key}.tar"

    def build(dest: Path) -> None:
        if shutil.which("mmdebstrap") is None:
            raise ImageError("mmdebstrap is not installed (apt-get install mmdebstrap)")
        partial = dest.with_name(dest.name + ".partial.tar")
        _log(f"making the Debian {DEBIAN_SUITE} root filesystem with mmdebstrap (about a minute)")
        # SOURCE_DATE_EPOCH: mmdebstrap clamps file times to it, so the tar depends on the
        # packages only.
        env = {**os.environ, "SOURCE_DATE_EPOCH": "0"}
        try:
            _run(_mmdebstrap_argv(str(partial), str(apt_sources())), "mmdebstrap", env=env)
            # --skip=output/dev leaves out /dev itself too; an image has it, empty, as the
            # mount point of the runtime's /dev.
            with tarfile.open(partial, mode="a", format=tarfile.GNU_FORMAT) as tar:
                _add_dir(tar, "./dev/")
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


def _pip_offline(
    python: str, offline: Sequence[str], fetch: Sequence[str], what: str, env: Mapping[str, str]
) -> None:
    """Run pip from the wheelhouse alone; when that fails (a wheel is missing), run
    ``pip download`` into it and try again."""
    try:
        _run([python, "-m", "pip", *offline], what, env=env)
        return
    except ImageError:
        pass
    _log(f"{what}: downloading what the wheelhouse lacks into {wheelhouse()}")
    _run([python, "-m", "pip", *fetch], f"{what} (pip download)", env=env)
    _run([python, "-m", "pip", *offline], what, env=env)


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
        _config_json(_kubenpu_config()),
    )


def _host_python311() -> str:
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
    python = _host_python311()
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
        _log("building the kubenpu wheel")
        # The build backend (pyproject's build-system.requires) comes from the wheelhouse too.
        pyproject = tomllib.loads((context / "pyproject.toml").read_text())
        backend = list(pyproject.get("build-system", {}).get("requires", []))
        _pip_offline(
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
        _mkdirs(root, DIST_PACKAGES, "usr/local/bin", "etc")
        site = root / DIST_PACKAGES
        _log(f"installing kubenpu and its dependencies into /{DIST_PACKAGES}")
        platform = pip_platform_args()
        _pip_offline(
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
        for name, target in sorted(scripts.items()):
            _write(root / "usr/local/bin" / name, _script(target), 0o755)

        _log("byte-compiling")
        # unchecked-hash: a .pyc that records the source's mtime would never match the
        # layer's zero mtimes, and Python would recompile at every start (and fail to
        # write on the read-only root). -s/-p record the in-image paths in tracebacks.
        compile_argv = ["-q", "--invalidation-mode", "unchecked-hash", "-s", str(root), "-p", "/"]
        _run([python, "-m", "compileall", *compile_argv, str(site)], "compileall")

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
        _write(root / "etc/passwd", passwd, 0o644)
        _write(root / "etc/group", group, 0o644)

        _log("writing the image")
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
        "npu-check", rootfs_key, NPU_CHECK_SOURCE.read_bytes(), _config_json(_npu_check_config())
    )


def _build_npu_check(dest: Path, rootfs: Path, *, layer_cache: Path | None) -> WrittenImage:
    with tempfile.TemporaryDirectory(prefix="npu-check-", dir=dest.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        root.chmod(0o755)
        _mkdirs(root, "app")
        _write(root / "app" / "npu_check.py", NPU_CHECK_SOURCE.read_bytes(), 0o755)
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
        _sha256_file(_kube_scheduler_binary()),
        _config_json(_kube_scheduler_config()),
    )


def _build_kube_scheduler(dest: Path, *, layer_cache: Path | None) -> WrittenImage:
    with tempfile.TemporaryDirectory(prefix="kube-scheduler-", dir=dest.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        root.chmod(0o755)
        _mkdirs(root, str(Path(KUBE_SCHEDULER_PATH).parent), "tmp")
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
                rootfs_key = _rootfs_key()
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
