"""The dev cluster's private registry: CNCF distribution with TLS and basic auth.

As in the seed, NPU workload images live in a private registry that pods pull from with an
``imagePullSecrets`` docker-registry secret. The registry listens on 127.0.0.1 (the relay
makes it reachable from the nodes on the gateway address); the nodes' containerd sends every
pull of :data:`SERVER` there, so the seed's manifests keep their registry name and nothing
is looked up in DNS. Without the secret a pull fails with the registry's 401.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import yaml

from kubenpu.devcluster import pki

#: The registry name the seed's manifests and secret use.
SERVER = "npu-registry.example.com"
#: The user the seed's secret names.
USERNAME = "npu-user"
PROCESS = "registry"


@dataclass(frozen=True, slots=True)
class RegistryFiles:
    """Where the registry keeps its config, certificate, password file and blobs."""

    root: Path

    @property
    def config(self) -> Path:
        """The registry's config.yml."""
        return self.root / "config.yml"

    @property
    def htpasswd(self) -> Path:
        """bcrypt password file (the only format distribution reads)."""
        return self.root / "htpasswd"

    @property
    def password_file(self) -> Path:
        """The generated password in clear (0600), for ``dev-cluster status``."""
        return self.root / "password"

    @property
    def cert(self) -> Path:
        """Serving certificate."""
        return self.root / "tls.crt"

    @property
    def key(self) -> Path:
        """Serving key."""
        return self.root / "tls.key"

    @property
    def storage(self) -> Path:
        """Blob storage."""
        return self.root / "storage"

    def password(self) -> str:
        """The registry user's password."""
        return self.password_file.read_text().strip()


def write_files(files: RegistryFiles, ca: pki.CertificateAuthority, port: int, gateway: str) -> str:
    """Write the registry's config, TLS pair and one user; return the password."""
    files.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    files.storage.mkdir(exist_ok=True)
    pair = ca.issue(
        SERVER,
        server=True,
        dns_names=(SERVER, "localhost"),
        ip_addresses=("127.0.0.1", gateway),
    )
    pki.write_public(files.cert, pair.cert_pem)
    pki.write_secret(files.key, pair.key_pem)
    password = secrets.token_urlsafe(18)
    pki.write_secret(files.password_file, password.encode() + b"\n")
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    pki.write_secret(files.htpasswd, f"{USERNAME}:{hashed}\n".encode())
    config = {
        "version": 0.1,
        "log": {"level": "warn", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(files.storage)},
            "delete": {"enabled": True},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": secrets.token_hex(16),
            "tls": {"certificate": str(files.cert), "key": str(files.key)},
        },
        "auth": {"htpasswd": {"realm": "kubenpu-dev-registry", "path": str(files.htpasswd)}},
    }
    pki.write_secret(files.config, yaml.safe_dump(config, sort_keys=False).encode())
    return password


def argv(binary: Path, files: RegistryFiles) -> list[str]:
    """The registry's command line, with no trace exporter (its default would dial an
    OpenTelemetry collector)."""
    return [
        "env",
        "OTEL_TRACES_EXPORTER=none",
        "OTEL_SDK_DISABLED=true",
        str(binary),
        "serve",
        str(files.config),
    ]
