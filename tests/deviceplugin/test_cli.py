"""The real ``kubenpu device-plugin`` command as a subprocess, driven by the kubelet peer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kubenpu.devcluster.kubelet import KubeletPeer

KUBENPU = str(Path(sys.executable).with_name("kubenpu"))


def spawn(*args: str) -> subprocess.Popen[str]:
    """The real CLI; NODE_NAME unset so that tests see what a bare environment gives."""
    return subprocess.Popen(
        [KUBENPU, "device-plugin", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "NODE_NAME"},
    )


def test_documented_command_serves_and_sigterm_cleans_up(
    peer: KubeletPeer, kubelet_dir: Path, health_dir: Path
) -> None:
    proc = spawn(
        "--backend", "mock", "--mock-devices", "4",
        "--kubelet-dir", str(kubelet_dir), "--mock-health-dir", str(health_dir),
    )  # fmt: skip
    try:
        peer.wait_for_registration("aliyun.com/npu", timeout=20)
        devices = peer.wait_for_devices("aliyun.com/npu", lambda ds: len(ds) == 4, timeout=5)
        assert all(d.healthy for d in devices)
        (health_dir / "unhealthy-npu-0").touch()
        peer.wait_for_devices("aliyun.com/npu", lambda ds: not ds[0].healthy, timeout=1.5)
        resp = peer.allocate("aliyun.com/npu", [["npu-1"], ["npu-2", "npu-3"]])
        assert len(resp.container_responses) == 2
        assert (kubelet_dir / "kubenpu-npu.sock").exists()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert not (kubelet_dir / "kubenpu-npu.sock").exists()
    assert "resolved config" in out and "shutting down" in out


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--backend", "tpu"], 2, "backend: one of"),
        (["--backend", "mock", "--mock-devices", "0"], 1, "found no devices"),
        (["--config", "/nonexistent/dp.yaml"], 2, "cannot read config file /nonexistent/dp.yaml"),
        (["--backend", "devfs", "--devfs-glob", "/nonexistent/npu*"], 1, "found no devices"),
        (["--health-interval", "5"], 2, "health-interval"),
        (["--backend", "mock", "--sharing"], 2, "node-name: needed with sharing"),
    ],
)
def test_startup_errors_are_one_clear_line(args, code, text, kubelet_dir: Path) -> None:
    proc = spawn("--kubelet-dir", str(kubelet_dir), *args)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == code, out
    assert text in out
    assert "Traceback" not in out


def test_bad_config_file_names_the_key(tmp_path: Path, kubelet_dir: Path) -> None:
    config = tmp_path / "dp.yaml"
    config.write_text("version: v1\nbackend: mock\nmock-devies: 3\n")
    proc = spawn("--kubelet-dir", str(kubelet_dir), "--config", str(config))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "unknown key 'mock-devies'" in out
