"""A dev cluster with a running ``kubenpu console``, for the console's e2e tests.

The cluster: kube-apiserver, kube-scheduler with the extender, the admission webhook, one
node agent with 4 NPUs and its device plugin (``NODE``); the console is the installed
command, run exactly as a user runs it: ``kubenpu console --kubeconfig PATH --port N``.
:func:`console_cluster` starts both and stops them again (the conftest's ``setup`` fixture,
one cluster per test module).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from e2e.support import wait_for

from console.server import free_port, get

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NODE = "npu-node-1"
IMAGE = "npu-registry.example.com/demo/npu-job:1.0"


class Setup:
    """The running dev cluster (``dev``), the console's base URL and its log."""

    #: The NPU node.
    node = NODE

    def __init__(self, dev: Any, base: str, state_dir: Path) -> None:
        from kubenpu.devcluster import binaries

        self.dev = dev
        self.base = base
        self.state_dir = state_dir
        self.kubectl_binary = binaries.kubectl()

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [self.kubectl_binary, "--kubeconfig", str(self.dev.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout + result.stderr

    def pod(self, name: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "pod", name, "-o", "json"))

    def page(self, path: str) -> str:
        status, _, body = get(self.base + path)
        assert status == 200, (path, status, body[:500])
        return body

    def run_npu_pod(self, name: str, npus: int, *flags: str, check: bool = True) -> str:
        """``kubectl run`` a pod asking for ``npus`` whole NPUs (and ``flags``); its output."""
        limits = {"aliyun.com/npu": str(npus)}
        overrides = {
            "spec": {
                "containers": [{"name": name, "image": IMAGE, "resources": {"limits": limits}}]
            }
        }
        return self.kubectl(
            "run", name, f"--image={IMAGE}", "--restart=Never",
            f"--overrides={json.dumps(overrides)}", *flags, check=check,
        )  # fmt: skip

    def place_seed_pods(self) -> tuple[str, str]:
        """Apply the seed's pod (1 NPU) and the two shares (30% and 60%); (the whole
        device, the shared device) once their placements are recorded."""
        self.kubectl("apply", "-f", str(EXAMPLES / "test-npu-pod.yaml"))
        self.kubectl("apply", "-f", str(EXAMPLES / "shared-npu-pods.yaml"))
        whole = self.device_of("test-npu-pod")
        share30, share60 = self.device_of("shared-npu-30"), self.device_of("shared-npu-60")
        assert share30 == share60 != whole  # packed onto one device
        return whole, share30

    def device_of(self, name: str) -> str:
        """The devices recorded on pod ``name`` (``kubenpu.io/devices``), once there."""

        def recorded() -> str | None:
            annotations = self.pod(name)["metadata"].get("annotations", {})
            return annotations.get("kubenpu.io/devices")

        return str(wait_for(f"{name} recorded", recorded))

    def inventory(self, node: str = NODE) -> list[str]:
        """The device ids the node's device plugin publishes."""
        obj = json.loads(self.kubectl("get", "node", node, "-o", "json"))
        return [
            d["id"]
            for d in json.loads(obj["metadata"]["annotations"]["kubenpu.io/device-inventory"])
        ]


def _status(url: str) -> int:
    try:
        return get(url, timeout=2)[0]
    except OSError:
        return 0


@contextmanager
def console_cluster(prefix: str = "kubenpu-console-") -> Iterator[Setup]:
    """A fresh dev cluster and ``kubenpu console`` on it, stopped at the end (the console's
    log tail is printed)."""
    from kubenpu.devcluster.cluster import ClusterSpec, up

    state_dir = Path(tempfile.mkdtemp(prefix=prefix))
    dev = up(state_dir, ClusterSpec(npu_nodes=1, npus_per_node=4, node_kind="agent"))
    port = free_port()
    log = (state_dir / "console.log").open("w")
    # The installed command, exactly as a user runs it.
    command = [str(Path(sys.executable).parent / "kubenpu"), "console"]
    proc = subprocess.Popen(
        [*command, "--kubeconfig", str(dev.kubeconfig), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("console ready", lambda: _status(base + "/readyz") == 200, timeout=30)
        yield Setup(dev, base, state_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        print((state_dir / "console.log").read_text()[-3000:])
        dev.down()
