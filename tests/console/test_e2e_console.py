"""``kubenpu console`` against a real dev cluster (kube-apiserver, kube-scheduler with the
extender, one node agent with 4 NPUs): the seed's pod and two shares placed, one pod
waiting, every page over HTTP, SSE after a change, a device turning unhealthy."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.server import SseReader, free_port, get

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NODE = "npu-node-1"


def wait_for(what: str, probe: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {result!r}")
        time.sleep(0.1)


class Setup:
    def __init__(self, dev: Any, base: str) -> None:
        from kubenpu.devcluster import binaries

        self.dev = dev
        self.base = base
        self.kubectl_binary = binaries.kubectl()

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [self.kubectl_binary, "--kubeconfig", str(self.dev.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def pod(self, name: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "pod", name, "-o", "json"))

    def page(self, path: str) -> str:
        status, _, body = get(self.base + path)
        assert status == 200, (path, status, body[:500])
        return body


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    from kubenpu.devcluster.cluster import ClusterSpec, up

    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-console-"))
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
        yield Setup(dev, base)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        print((state_dir / "console.log").read_text()[-3000:])
        dev.down()


def _status(url: str) -> int:
    try:
        return get(url, timeout=2)[0]
    except OSError:
        return 0


def _device_of(setup: Setup, name: str) -> str:
    pod = wait_for(
        f"{name} recorded",
        lambda: (
            (a := setup.pod(name)["metadata"].get("annotations", {})).get("kubenpu.io/devices")
            and a
        ),
    )
    return str(pod["kubenpu.io/devices"])


def test_console_pages_on_a_dev_cluster(setup: Setup) -> None:
    setup.kubectl("apply", "-f", str(EXAMPLES / "test-npu-pod.yaml"))
    setup.kubectl("apply", "-f", str(EXAMPLES / "shared-npu-pods.yaml"))
    whole = _device_of(setup, "test-npu-pod")
    share30, share60 = _device_of(setup, "shared-npu-30"), _device_of(setup, "shared-npu-60")
    assert share30 == share60 != whole  # packed onto one device

    # The cluster grid shows exactly those allocations on those devices.
    def grid() -> str | None:
        body = setup.page("/?fragment=1")
        ok = (
            f'data-device="{whole}" data-kind="whole" data-pods="default/test-npu-pod"' in body
            and f'data-device="{share30}" data-kind="shared" '
            'data-pods="default/shared-npu-60 default/shared-npu-30"'
            in body
        )
        return body if ok else None

    body = wait_for("the grid to show the placements", grid, timeout=20)
    assert body.count('data-kind="free"') == 2 and body.count('data-kind="whole"') == 1
    assert '<b id="allocation">47.5%</b>' in body  # 1 + 0.3 + 0.6 of 4 NPUs

    # A pod that cannot fit: 4 whole NPUs, 2 free.
    setup.kubectl(
        "run", "too-big", "--image=npu-registry.example.com/demo/npu-job:1.0",
        "--restart=Never", '--overrides={"spec":{"containers":[{"name":"too-big",'
        '"image":"npu-registry.example.com/demo/npu-job:1.0",'
        '"resources":{"limits":{"aliyun.com/npu":"4"}}}]}}',
    )  # fmt: skip

    def reason() -> str | None:
        body = setup.page("/pending")
        return body if "too few free whole NPUs" in body else None

    pending = wait_for("the pending page to give the scheduler's reason", reason, timeout=30)
    assert '<tr data-pod="default/too-big">' in pending and "4 whole NPUs" in pending

    # The node page: its devices with index and group, pods and shares.
    node = setup.page(f"/nodes/{NODE}")
    for text in (whole, share30, "default/test-npu-pod", "default/shared-npu-30", "30%", "60%"):
        assert text in node, text
    assert "hanguang-800" in node and "ecs.ebman1.26xlarge" in node
    assert f'<tr data-device="{whole}" data-kind="whole">' in node

    status, _, missing = get(setup.base + "/nodes/no-such-node")
    assert status == 404 and "no-such-node" in missing

    # Live: the stream says something changed after a pod is created.
    reader = SseReader(setup.base + "/events")
    try:
        assert reader.next_event()[0] == "hello"
        setup.kubectl(
            "run", "one-more", "--image=npu-registry.example.com/demo/npu-job:1.0",
            "--restart=Never", '--overrides={"spec":{"containers":[{"name":"one-more",'
            '"image":"npu-registry.example.com/demo/npu-job:1.0",'
            '"resources":{"limits":{"aliyun.com/npu":"1"}}}]}}',
        )  # fmt: skip
        started = time.monotonic()
        assert reader.next_event()[0] == "change"
        assert time.monotonic() - started < 5
    finally:
        reader.close()

    # A device turning unhealthy shows within 5 s.
    node_obj = json.loads(setup.kubectl("get", "node", NODE, "-o", "json"))
    inventory = json.loads(node_obj["metadata"]["annotations"]["kubenpu.io/device-inventory"])
    held = {whole, share30, _device_of(setup, "one-more")}
    sick = next(d["id"] for d in inventory if d["id"] not in held)
    setup.dev.set_device_health(NODE, sick, healthy=False)
    started = time.monotonic()
    wait_for(
        f"{sick} drawn unhealthy",
        lambda: f'data-device="{sick}" data-kind="unhealthy"' in setup.page("/?fragment=1"),
        timeout=10,
    )
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed
    metrics = setup.page("/metrics")
    assert f'kubenpu_console_npus{{model="hanguang-800",node="{NODE}",state="unhealthy"}} 1.0' in (
        metrics
    )
    assert "kubenpu_console_pending_npu_pods 1.0" in metrics
