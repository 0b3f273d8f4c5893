"""OCI image-layout archives: a deterministic writer and a reader, nothing else.

An image is written as one ``.tar`` holding an OCI image layout (``oci-layout``,
``index.json``, ``blobs/sha256/...``) that ``ctr -n k8s.io images import`` loads into
containerd under the name in the index's annotations. The writer is deterministic (sorted
tar entries, zero timestamps and owners, gzip without a time stamp): the same inputs give
the same digests.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from kubenpu.errors import KubeNpuError

# ---------------------------------------------------------------------------------------
# Media types and annotations
# ---------------------------------------------------------------------------------------

MEDIA_TYPE_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
#: The annotation the OCI image-layout spec names images by.
ANNOTATION_REF_NAME: Final = "org.opencontainers.image.ref.name"
#: The annotation containerd's importer takes the full image name from.
ANNOTATION_CONTAINERD_NAME: Final = "io.containerd.image.name"

# One fixed time for every image: "created" must be a time, and a real one would make
# two builds of the same inputs differ.
_EPOCH: Final = "1970-01-01T00:00:00Z"
# Level 6 is zlib's default: within a few percent of 9 in size at a fraction of the
# time, which matters for the few hundred megabytes of the kubenpu layer on two cores.
_GZIP_LEVEL: Final = 6
#: Read size for blobs.
CHUNK: Final = 1 << 20


class ImageError(KubeNpuError):
    """An image could not be built or read (a tool failed, an archive is malformed)."""


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


def canonical_json(obj: Any) -> bytes:
    # Sorted keys, no spaces: one spelling per document, so one digest.
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
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
            while chunk := src.read(CHUNK):
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
    diff_id = sha256_file(tar_path)
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


def add_dir(tar: tarfile.TarFile, name: str) -> None:
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
        config_bytes = canonical_json(config_doc)
        config_desc = Descriptor(
            MEDIA_TYPE_CONFIG,
            "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
            len(config_bytes),
        )
        manifest_bytes = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_MANIFEST,
                "config": config_desc.to_json(),
                "layers": [d.to_json() for d in layer_descs],
            }
        )
        manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        index_bytes = canonical_json(
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
            _add_bytes(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
            _add_bytes(tar, "index.json", index_bytes)
            add_dir(tar, "blobs/")
            add_dir(tar, "blobs/sha256/")
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
