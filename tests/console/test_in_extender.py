"""``kubenpu scheduler --console-port``: the console served from the extender's process."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from console.cluster import NODE, _status, wait_for
from console.server import free_port, get

pytestmark = pytest.mark.e2e


def test_scheduler_serves_the_console_beside_the_extender() -> None:
    from kubenpu.devcluster.cluster import ClusterSpec, up

    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-console-ext-"))
    dev = up(state_dir, ClusterSpec(npu_nodes=1, npus_per_node=4, node_kind="agent"), webhook=False)
    port, console_port = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "kubenpu"), "scheduler"]
    log = (state_dir / "scheduler.log").open("w")
    proc = subprocess.Popen(
        [
            *command, "--kubeconfig", str(dev.kubeconfig), "--address", "127.0.0.1",
            "--port", str(port), "--console-port", str(console_port),
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{console_port}"
    try:
        wait_for("extender ready", lambda: _status(f"http://127.0.0.1:{port}/readyz") == 200)
        wait_for("console ready", lambda: _status(base + "/readyz") == 200)
        status, _, body = get(f"{base}/nodes/{NODE}")
        assert status == 200 and NODE in body and 'data-device="' in body
        assert get(f"{base}/nodes/no-such-node")[0] == 404
        proc.terminate()
        assert proc.wait(20) == 0  # both servers stop on SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        print((state_dir / "scheduler.log").read_text()[-2000:])
        dev.down()
