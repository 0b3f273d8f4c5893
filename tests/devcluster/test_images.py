"""The OCI image writer, the content-hash cache, push against a fake registry, npu-check.

Nothing here needs the network, root, gcc or mmdebstrap: the fake registry listens on
127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import ssl
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from kubenpu.devcluster import images, oci, pki, registry_client

REPO = Path(__file__).resolve().parents[2]
NAME = "kubenpu.local/demo:1.0"


# ---- fixtures: layers ---------------------------------------------------------------


def _tree(root: Path) -> Path:
    """A small tree with what layers carry: nested dirs, an executable, a symlink, a
    hard link and a name longer than the ustar limit of 100 characters."""
    (root / "usr" / "bin").mkdir(parents=True)
    tool = root / "usr" / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    (root / "usr" / "bin" / "tool-link").symlink_to("tool")
    os.link(tool, root / "usr" / "bin" / "tool-hard")
    deep = root / "opt" / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / "data.txt").write_text("payload\n")
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("hello\n")
    return root


def _plain_tar(path: Path) -> Path:
    """An uncompressed tar made elsewhere (as mmdebstrap's would be)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("./etc/os-release")
        data = b"ID=test\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


CONFIG = oci.ImageConfig(
    entrypoint=("/usr/bin/tool",),
    cmd=("--flag",),
    env=("PATH=/usr/bin", "A=b"),
    working_dir="/opt",
    user="65532:65532",
    labels={"z": "1", "a": "2"},
)


def write_file(tmp_path: Path, dest_name: str, **kwargs: Any) -> oci.WrittenImage:
    base = tmp_path / "base.tar"
    if not base.exists():
        _plain_tar(base)
    tree = tmp_path / "tree"
    if not tree.exists():
        _tree(tree)
    return oci.write_oci_archive([base, tree], CONFIG, NAME, tmp_path / dest_name, **kwargs)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- the writer ---------------------------------------------------------------------


def test_tar_directory_is_sorted_normalised_and_without_pax(tmp_path) -> None:
    tree = _tree(tmp_path / "tree")
    first = oci.tar_directory(tree, tmp_path / "a.tar").read_bytes()
    os.utime(tree / "etc" / "motd", (1_700_000_000, 1_700_000_000))  # only times change
    second = oci.tar_directory(tree, tmp_path / "b.tar").read_bytes()
    assert first == second

    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
        assert tar.pax_headers == {}
    names = [m.name for m in members]
    assert names[:3] == ["etc", "etc/motd", "opt"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert all(m.uname == "" and m.gname == "" and m.pax_headers == {} for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["usr/bin/tool"].mode & 0o777 == 0o755
    assert by_name["usr/bin/tool-link"].issym() and by_name["usr/bin/tool-link"].linkname == "tool"
    assert by_name["usr/bin/tool-hard"].islnk()
    assert any(len(n) > 100 for n in names)
    # No pax extended header block anywhere (typeflag 'x' or 'g' at a header's offset 156).
    assert b"PaxHeader" not in first


def test_archive_layout_index_manifest_and_config(tmp_path) -> None:
    written = write_file(tmp_path, "image.oci.tar")
    with oci.OciArchive(written.path) as archive:
        names = set(archive.names())
        assert {"oci-layout", "index.json", "blobs/sha256"} <= names
        assert json.loads(archive.read("oci-layout")) == {"imageLayoutVersion": "1.0.0"}

        index = archive.index()
        assert index["schemaVersion"] == 2
        assert index["mediaType"] == oci.MEDIA_TYPE_INDEX
        (entry,) = index["manifests"]
        assert entry["annotations"] == {
            "io.containerd.image.name": NAME,
            "org.opencontainers.image.ref.name": NAME,
        }
        assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
        assert entry["digest"] == written.digest

        desc, manifest_bytes = archive.manifest(NAME)
        assert desc.digest == _sha(manifest_bytes) == written.digest
        manifest = json.loads(manifest_bytes)
        assert manifest["mediaType"] == oci.MEDIA_TYPE_MANIFEST
        assert manifest["config"]["mediaType"] == oci.MEDIA_TYPE_CONFIG
        assert [layer["mediaType"] for layer in manifest["layers"]] == [
            oci.MEDIA_TYPE_LAYER_GZIP
        ] * 2

        # Every blob is named by its digest and has its descriptor's size.
        for d in [manifest["config"], *manifest["layers"]]:
            data = archive.read(archive.blob_name(d["digest"]))
            assert _sha(data) == d["digest"]
            assert len(data) == d["size"]
        blob_files = {n for n in names if n.startswith("blobs/sha256/")}
        assert len(blob_files) == 4  # manifest, config, two layers: nothing else

        config = json.loads(archive.read(archive.blob_name(manifest["config"]["digest"])))
        layers = [archive.read(archive.blob_name(d["digest"])) for d in manifest["layers"]]

    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["config"] == {
        "Entrypoint": ["/usr/bin/tool"],
        "Cmd": ["--flag"],
        "Env": ["PATH=/usr/bin", "A=b"],
        "WorkingDir": "/opt",
        "User": "65532:65532",
        "Labels": {"a": "2", "z": "1"},
    }
    # diff_ids: the digests of the uncompressed layers, bottom first.
    assert config["rootfs"]["type"] == "layers"
    assert config["rootfs"]["diff_ids"] == [_sha(gzip.decompress(b)) for b in layers]
    assert config["rootfs"]["diff_ids"][0] == _sha((tmp_path / "base.tar").read_bytes())
    assert list(written.diff_ids) == config["rootfs"]["diff_ids"]
    # Deterministic gzip: no time stamp and no file name in the header.
    for blob in layers:
        assert blob[:2] == b"\x1f\x8b"
        assert blob[4:8] == b"\0\0\0\0", "gzip MTIME must be 0"
        assert blob[3] & 0x08 == 0, "gzip FNAME must not be set"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layers[1]))) as tar:
        assert "usr/bin/tool" in tar.getnames()


def test_same_inputs_give_the_same_digests_and_bytes(tmp_path) -> None:
    first = write_file(tmp_path, "one.oci.tar")
    os.utime(tmp_path / "tree" / "usr" / "bin" / "tool", (1_600_000_000, 1_600_000_000))
    second = write_file(tmp_path, "two.oci.tar")
    assert (first.digest, first.config, first.layers) == (
        second.digest,
        second.config,
        second.layers,
    )
    assert first.path.read_bytes() == second.path.read_bytes()

    # The layer cache gives the same blobs, and is used the second time.
    cache = tmp_path / "layers"
    third = write_file(tmp_path, "three.oci.tar", layer_cache=cache)
    assert len(list(cache.glob("*.tar.gz"))) == 2
    fourth = write_file(tmp_path, "four.oci.tar", layer_cache=cache)
    assert third.digest == fourth.digest == first.digest
    assert third.path.read_bytes() == first.path.read_bytes()

    # A changed input changes the layer, its diff_id and the manifest.
    (tmp_path / "tree" / "etc" / "motd").write_text("changed\n")
    changed = write_file(tmp_path, "five.oci.tar")
    assert changed.digest != first.digest
    assert changed.diff_ids[0] == first.diff_ids[0] and changed.diff_ids[1] != first.diff_ids[1]


@pytest.mark.parametrize(
    "name", ["pause:3.10", "kubenpu.local/pause", "kubenpu.local/Pause:1", "x/y@sha256:00"]
)
def test_a_reference_needs_registry_repository_and_tag(tmp_path, name: str) -> None:
    with pytest.raises(oci.ImageError, match="REGISTRY/REPOSITORY:TAG"):
        oci.write_oci_archive([_tree(tmp_path / "t")], CONFIG, name, tmp_path / "x.tar")


def test_split_reference() -> None:
    assert oci.split_reference("kubenpu.local/pause:3.10") == ("kubenpu.local/pause", "3.10")
    assert oci.split_reference("10.0.0.1:5000/a/b:v1") == ("10.0.0.1:5000/a/b", "v1")


# ---- the cache ------------------------------------------------------------------------


def test_cached_build_builds_once_and_prunes_older_inputs(tmp_path) -> None:
    calls: list[Path] = []

    def build(path: Path) -> None:
        calls.append(path)
        path.write_bytes(b"archive")

    old = images.archive_path("kubenpu.local/pause:3.10", "0" * 16, tmp_path)
    assert old.name == f"pause-3.10-{'0' * 16}.oci.tar"
    assert images.cached_build(old, build) == (old, False)
    assert images.cached_build(old, build) == (old, True)
    assert calls == [old]

    unrelated = tmp_path / "kubenpu-0.1.0-0123456789abcdef.oci.tar"
    unrelated.write_bytes(b"other image")
    new = images.archive_path("kubenpu.local/pause:3.10", images.inputs_hash("changed"), tmp_path)
    assert images.cached_build(new, build) == (new, False)
    assert not old.exists() and new.exists() and unrelated.exists()


def test_inputs_hash_separates_parts() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", images.inputs_hash("a", b"b"))
    assert images.inputs_hash("ab", "c") != images.inputs_hash("a", "bc")
    assert images.inputs_hash("a") == images.inputs_hash(b"a")


def test_the_image_recipes_name_no_mirror_and_pin_the_platform() -> None:
    argv = images._mmdebstrap_argv("OUT", "/etc/apt/sources.list.d/debian.sources")
    assert "--variant=minbase" in argv and "--format=tar" in argv
    assert "--include=python3,ca-certificates" in argv
    assert not any("://" in a for a in argv), "the mirror comes from the host's apt config"
    pip = images.pip_platform_args()
    assert "--only-binary=:all:" in pip and "manylinux2014_x86_64" in pip
    assert pip[pip.index("--python-version") + 1] == "3.11"
    assert images.kubenpu_image() == f"kubenpu.local/kubenpu:{images.kubenpu_version()}"
    assert images.PAUSE_SOURCE.is_file() and images.NPU_CHECK_SOURCE.is_file()


def test_console_scripts_are_written_for_the_debian_python(tmp_path) -> None:
    info = tmp_path / "kubenpu-0.1.0.dist-info"
    info.mkdir()
    (info / "entry_points.txt").write_text(
        "[console_scripts]\nkubenpu = kubenpu.cli.main:main\nObj = pkg.mod:Obj.run [extra]\n"
    )
    scripts = images._console_scripts(tmp_path)
    assert scripts == {"kubenpu": "kubenpu.cli.main:main", "Obj": "pkg.mod:Obj.run [extra]"}
    script = images._script(scripts["kubenpu"])
    assert script.startswith("#!/usr/bin/python3\n")
    assert "from kubenpu.cli.main import main" in script and "sys.exit(main())" in script
    assert "sys.exit(Obj.run())" in images._script(scripts["Obj"])
    compile(script, "kubenpu", "exec")


# ---- push, against a fake registry ----------------------------------------------------


class FakeRegistry:
    """The distribution API's push endpoints over HTTPS on 127.0.0.1, with Basic auth or
    the Bearer token flow. Stops by itself after ``lifetime`` seconds at the latest."""

    def __init__(self, tmp_path: Path, *, auth: str, lifetime: float = 30.0) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        ca = pki.CertificateAuthority("fake-registry-ca")
        pair = ca.issue("fake-registry", server=True, ip_addresses=("127.0.0.1",))
        self.cafile = tmp_path / "ca.pem"
        self.cafile.write_bytes(ca.cert_pem)
        (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
        (tmp_path / "tls.key").write_bytes(pair.key_pem)
        self.auth = auth
        self.user, self.password, self.token = "npu-user", "s3cret", f"tkn-{uuid.uuid4().hex}"
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.uploads: dict[str, str] = {}
        self.log: list[tuple[str, str]] = []
        self.token_queries: list[dict[str, list[str]]] = []
        self.lock = threading.Lock()

        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._watchdog = threading.Timer(lifetime, self.server.shutdown)
        self._watchdog.daemon = True

    def __enter__(self) -> FakeRegistry:
        self._thread.start()
        self._watchdog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watchdog.cancel()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def count(self, method: str, prefix: str = "") -> int:
        return sum(1 for m, p in self.log if m == method and p.startswith(prefix))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, code: str, headers: dict | None = None):
                body = json.dumps({"errors": [{"code": code, "message": code.lower()}]})
                self._reply(status, body.encode(), headers)

            def _basic_ok(self) -> bool:
                expected = base64.b64encode(
                    f"{registry.user}:{registry.password}".encode()
                ).decode()
                return self.headers.get("Authorization") == f"Basic {expected}"

            def _authorized(self, repo: str) -> bool:
                if registry.auth == "basic":
                    if self._basic_ok():
                        return True
                    challenge = 'Basic realm="fake-registry"'
                else:
                    if self.headers.get("Authorization") == f"Bearer {registry.token}":
                        return True
                    realm = f"https://{registry.address}/token"
                    scope = f"repository:{repo}:pull" if repo else "registry:catalog:*"
                    challenge = f'Bearer realm="{realm}",service="fake",scope="{scope}"'
                self._error(401, "UNAUTHORIZED", {"WWW-Authenticate": challenge})
                return False

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def _route(self) -> None:
                url = urlsplit(self.path)
                with registry.lock:
                    registry.log.append((self.command, url.path))
                if url.path == "/token":
                    if not self._basic_ok():
                        return self._error(401, "UNAUTHORIZED")
                    registry.token_queries.append(parse_qs(url.query))
                    return self._reply(200, json.dumps({"token": registry.token}).encode())
                if url.path == "/v2/":
                    if self._authorized(""):
                        self._reply(200, b"{}")
                    return None
                match = re.fullmatch(r"/v2/(.+?)/(blobs|manifests)/(.*)", url.path)
                if not match:
                    return self._error(404, "NAME_UNKNOWN")
                repo, kind, rest = match.groups()
                if not self._authorized(repo):
                    return None
                if kind == "blobs" and self.command == "HEAD":
                    if rest in registry.blobs:
                        return self._reply(200, b"", {"Docker-Content-Digest": rest})
                    return self._error(404, "BLOB_UNKNOWN")
                if kind == "blobs" and self.command == "POST" and rest == "uploads/":
                    self._body()
                    upload = uuid.uuid4().hex
                    registry.uploads[upload] = repo
                    # An absolute Location, as real registries send: only its path counts.
                    location = f"https://registry.invalid/v2/{repo}/blobs/uploads/{upload}?s=1"
                    return self._reply(202, b"", {"Location": location})
                if kind == "blobs" and self.command == "PUT" and rest.startswith("uploads/"):
                    upload = rest.removeprefix("uploads/")
                    query = parse_qs(url.query)
                    data = self._body()
                    if registry.uploads.pop(upload, None) != repo or query.get("s") != ["1"]:
                        return self._error(404, "BLOB_UPLOAD_UNKNOWN")
                    digest = query["digest"][0]
                    if _sha(data) != digest:
                        return self._error(400, "DIGEST_INVALID")
                    registry.blobs[digest] = data
                    return self._reply(201, b"", {"Docker-Content-Digest": digest})
                if kind == "manifests" and self.command == "PUT":
                    data = self._body()
                    content_type = self.headers.get("Content-Type", "")
                    doc = json.loads(data)
                    refs = [doc["config"], *doc["layers"]]
                    if any(d["digest"] not in registry.blobs for d in refs):
                        return self._error(400, "MANIFEST_BLOB_UNKNOWN")
                    registry.manifests[(repo, rest)] = (content_type, data)
                    return self._reply(201, b"", {"Docker-Content-Digest": _sha(data)})
                return self._error(405, "UNSUPPORTED")

            do_GET = do_HEAD = do_POST = do_PUT = _route

        return Handler


@pytest.fixture
def archive(tmp_path) -> Path:
    return write_file(tmp_path, "push.oci.tar").path


@pytest.fixture
def basic_registry(tmp_path) -> Iterator[FakeRegistry]:
    with FakeRegistry(tmp_path / "basic", auth="basic") as registry:
        yield registry


def test_push_with_basic_auth_uploads_blobs_then_the_manifest(
    archive: Path, basic_registry: FakeRegistry
) -> None:
    r = basic_registry
    digest = registry_client.push(
        archive,
        r.address,
        "demo/npu-check",
        "1.0",
        username=r.user,
        password=r.password,
        cafile=r.cafile,
        timeout=10,
    )
    with oci.OciArchive(archive) as image:
        desc, manifest = image.manifest()
    assert digest == desc.digest
    assert r.manifests[("demo/npu-check", "1.0")] == (oci.MEDIA_TYPE_MANIFEST, manifest)
    doc = json.loads(manifest)
    assert {d["digest"] for d in [doc["config"], *doc["layers"]]} == set(r.blobs)
    assert r.count("POST", "/v2/demo/npu-check/blobs/uploads/") == 3

    # A second push finds every blob (HEAD 200) and only puts the manifest again.
    again = registry_client.push(
        archive,
        r.address,
        "demo/npu-check",
        "1.0",
        username=r.user,
        password=r.password,
        cafile=r.cafile,
        timeout=10,
    )
    assert again == digest
    assert r.count("POST") == 3
    assert r.count("PUT", "/v2/demo/npu-check/manifests/") == 2


def test_push_refuses_bad_or_missing_credentials(
    archive: Path, basic_registry: FakeRegistry
) -> None:
    r = basic_registry
    with pytest.raises(registry_client.PushError, match="refused the credentials"):
        registry_client.push(
            archive,
            r.address,
            "demo/x",
            "1",
            username=r.user,
            password="wrong",
            cafile=r.cafile,
            timeout=10,
        )
    with pytest.raises(registry_client.PushError, match="none were given"):
        registry_client.push(archive, r.address, "demo/x", "1", cafile=r.cafile, timeout=10)
    assert r.blobs == {} and r.manifests == {}


def test_push_verifies_the_registry_certificate(
    archive: Path, basic_registry: FakeRegistry
) -> None:
    # The system trust store does not hold the fake registry's CA.
    with pytest.raises(registry_client.PushError, match="CERTIFICATE_VERIFY_FAILED"):
        registry_client.push(archive, basic_registry.address, "demo/x", "1", timeout=10)


def test_push_follows_the_bearer_token_flow(tmp_path, archive: Path) -> None:
    with FakeRegistry(tmp_path / "bearer", auth="bearer") as r:
        digest = registry_client.push(
            archive,
            r.address,
            "team/kubenpu",
            "0.1.0",
            username=r.user,
            password=r.password,
            cafile=r.cafile,
            timeout=10,
        )
        assert ("team/kubenpu", "0.1.0") in r.manifests
        assert digest == _sha(r.manifests[("team/kubenpu", "0.1.0")][1])
        # A token was asked for with push rights on the repository, for the right service.
        scopes = {s for q in r.token_queries for s in q.get("scope", [])}
        assert "repository:team/kubenpu:pull,push" in scopes
        assert all(q.get("service") == ["fake"] for q in r.token_queries)


@pytest.mark.parametrize("address", ["localhost:5000", "registry.example.com:443", "10.0.0.1"])
def test_push_never_resolves_a_name(archive: Path, address: str) -> None:
    with pytest.raises(registry_client.PushError, match="IP:PORT"):
        registry_client.push(archive, address, "demo/x", "1", timeout=1)


def test_challenge_parsing() -> None:
    scheme, params = registry_client.parse_challenge(
        'Bearer realm="https://10.0.0.1:5001/auth",service="reg",scope="repository:a/b:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://10.0.0.1:5001/auth",
        "service": "reg",
        "scope": "repository:a/b:pull",
    }
    assert registry_client.parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
    assert registry_client.parse_address("[::1]:5000") == ("::1", 5000)


# ---- npu-check ----------------------------------------------------------------------


@functools.cache
def _npu_check() -> ModuleType:
    """examples/npu-check/npu_check.py as a module (it is a script, not in a package)."""
    spec = importlib.util.spec_from_file_location("npu_check", images.NPU_CHECK_SOURCE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: its dataclasses look their module up by name.
    sys.modules.setdefault("npu_check", module)
    spec.loader.exec_module(module)
    return module


def test_npu_check_accepts_matching_devices_env_and_record() -> None:
    m = _npu_check()
    devices = [m.Device("/dev/mock-npu0", 240, 0), m.Device("/dev/mock-npu1", 240, 1)]
    env = {
        "NPU_VISIBLE_DEVICES": "0,1",
        "MOCK_NPU_VISIBLE_DEVICES": "1,0",
        "KUBENPU_DEVICES": "npu-0,npu-1",
        "HOME": "/root",
    }
    lines, reason = m.check(env, devices)
    assert reason is None
    assert lines == [
        "env MOCK_NPU_VISIBLE_DEVICES=1,0",
        "env NPU_VISIBLE_DEVICES=0,1",
        "device /dev/mock-npu0 240:0",
        "device /dev/mock-npu1 240:1",
        "record npu-0,npu-1",
    ]


@pytest.mark.parametrize(
    ("env", "devices", "reason"),
    [
        ({"NPU_VISIBLE_DEVICES": "0"}, [], "no NPU device node under /dev although"),
        ({"NPU_VISIBLE_DEVICES": "1"}, ["/dev/mock-npu0"], "NPU_VISIBLE_DEVICES=1 but"),
        ({"KUBENPU_DEVICES": "npu-3"}, ["/dev/mock-npu0"], "record npu-3 (indices 3)"),
        ({"KUBENPU_DEVICES": ""}, ["/dev/mock-npu0"], "no kubenpu.io/devices record"),
        ({"ALINPU_VISIBLE_DEVICES": "all"}, ["/dev/npu0"], "not a comma-separated list"),
    ],
)
def test_npu_check_explains_a_mismatch(env: dict, devices: list[str], reason: str) -> None:
    m = _npu_check()
    _, got = m.check(env, [m.Device(p, 240, 0) for p in devices])
    assert got is not None and reason in got


def test_npu_check_without_devices_exits_1_with_one_reason_line(tmp_path, capsys) -> None:
    m = _npu_check()
    assert m.main(["--dev", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("error no NPU device node under")
