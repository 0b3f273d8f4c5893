"""``kubenpu webhook`` as a process: starts, answers probes, stops on SIGTERM."""

from __future__ import annotations

import http.client
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import yaml

from kubenpu.devcluster import processes
from kubenpu.devcluster.pki import CertificateAuthority

KUBENPU = str(Path(sys.executable).parent / "kubenpu")


def write_kubeconfig(path: Path) -> None:
    """A kubeconfig for an API server nobody runs: lookups happen on the first NPU pod
    only, so probes and start-up do not need one."""
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(kubeconfig))


def test_serves_probes_and_stops_on_sigterm(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    pair = ca.issue("webhook", server=True, ip_addresses=("127.0.0.1",))
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    write_kubeconfig(tmp_path / "kubeconfig")
    port = processes.free_port()
    flags = [
        f"--tls-cert-file={tmp_path / 'tls.crt'}",
        f"--tls-key-file={tmp_path / 'tls.key'}",
        f"--kubeconfig={tmp_path / 'kubeconfig'}",
    ]
    proc = subprocess.Popen(
        [KUBENPU, "webhook", "--host", "127.0.0.1", f"--port={port}", *flags],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        context = ssl.create_default_context(cadata=ca.cert_pem.decode())
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=2)
                conn.request("GET", "/readyz")
                assert conn.getresponse().status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "webhook did not come up"
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "serving certificate" in stderr and "stopping" in stderr


def test_unloadable_certificate_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text("not a certificate")
    write_kubeconfig(tmp_path / "kubeconfig")
    result = subprocess.run(
        [
            KUBENPU,
            "webhook",
            f"--tls-cert-file={tmp_path / 'tls.crt'}",
            f"--tls-private-key-file={tmp_path / 'tls.crt'}",
            f"--kubeconfig={tmp_path / 'kubeconfig'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot start: SSLError" in result.stderr
