"""``kubectl npu validate`` on real kubelets: the real kubectl runs the plugin, which runs the
ResNet-50 workload as one Job per NPU node (all four NPUs of each) and reads back what each
container saw and measured.

1. ``--all`` passes on the healthy 2-node cluster and leaves no Job or pod behind;
2. a device made unhealthy fails its node, naming the device, and the command exits 1;
3. a stopped device plugin fails its node (nothing allocatable), exit 1;
4. an image that cannot be pulled, and a run cut short by ``--timeout``, are reported as such.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e.support import Cluster, wait_for

from kubenpu.kubectl_plugin import validate
from realnodes.conftest import NPU_NODES, NPUS_PER_NODE

pytestmark = pytest.mark.realnodes

#: The virtualenv's bin holds kubectl-npu; kubectl looks for plugins on PATH.
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
#: Each validation run's own bound (both nodes train at once on this machine's 2 cores).
RUN_TIMEOUT = 300


def kubectl_npu_validate(real: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    assert real.kubectl_binary
    return subprocess.run(
        [real.kubectl_binary, "npu", "validate", *args, "--kubeconfig", str(real.dev.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT + 120,
        check=False,
        env={**os.environ, "PATH": PATH},
    )


def _items(out: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    doc = json.loads(out.stdout)
    assert doc["kind"] == "NpuValidationList"
    return {item["node"]: item for item in doc["items"]}


def _nothing_left(real: Cluster) -> None:
    selector = f"{validate.LABEL_APP}={validate.APP}"
    jobs = json.loads(real.kubectl("get", "jobs", "-l", selector, "-o", "json"))["items"]
    pods = json.loads(real.kubectl("get", "pods", "-l", selector, "-o", "json"))["items"]
    assert (jobs, pods) == ([], [])


def test_validate_all_passes_on_healthy_nodes(
    clean: Cluster, regsecret: str, resnet50: str
) -> None:
    real = clean
    out = kubectl_npu_validate(real, "--all", "--timeout", str(RUN_TIMEOUT), "-o", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["passed"] is True
    items = _items(out)
    assert sorted(items) == list(NPU_NODES)
    devices = [f"/dev/mock-npu{i}" for i in range(NPUS_PER_NODE)]
    for node, item in items.items():
        assert item["passed"] and item["reason"] == "", item
        assert item["npus"] == NPUS_PER_NODE
        # Every NPU of the node, seen in the container exactly as the extender recorded them.
        assert item["devices"] == devices, item
        assert sorted(item["record"].split(",")) == [f"npu-{i}" for i in range(NPUS_PER_NODE)]
        assert item["match"] is True
        assert item["images_per_s"] > 0 and item["top1"] >= 50 and item["top5"] >= item["top1"]
        assert item["device"] == "CPU"
        # The live progress, one line per change when stderr is not a terminal.
        assert f"{node}: passed" in out.stderr
    _nothing_left(real)


def test_an_unhealthy_device_fails_its_node(clean: Cluster, regsecret: str, resnet50: str) -> None:
    real = clean
    sick = NPU_NODES[1]
    real.dev.set_device_health(sick, "npu-0", healthy=False)
    wait_for(
        f"{sick} allocatable down to {NPUS_PER_NODE - 1}",
        lambda: real.allocatable_npus(sick) == NPUS_PER_NODE - 1,
        timeout=30,
    )
    out = kubectl_npu_validate(real, "--all", "--timeout", str(RUN_TIMEOUT))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["NODE", "NPUS"] and "REASON" in lines[0]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert " PASS" in rows[NPU_NODES[0]], out.stdout
    assert " FAIL " in rows[sick], out.stdout
    assert (
        f"scheduling: {sick} has {NPUS_PER_NODE - 1} of {NPUS_PER_NODE} NPUs allocatable "
        "(unhealthy: npu-0)"
    ) in rows[sick], out.stdout
    assert lines[-1] == f"1 of 2 NPU node(s) failed: {sick}"
    _nothing_left(real)


def test_a_stopped_device_plugin_fails_its_node(
    clean: Cluster, regsecret: str, resnet50: str
) -> None:
    real = clean
    node = NPU_NODES[1]
    real.dev.stop_process(f"device-plugin/{node}")
    try:
        wait_for(
            f"{node} allocatable down to 0", lambda: real.allocatable_npus(node) == 0, timeout=60
        )
        out = kubectl_npu_validate(real, "--node", node, "--timeout", "120", "-o", "json")
    finally:
        real.dev.start_process(f"device-plugin/{node}")
        wait_for(
            f"{node} NPUs back",
            lambda: real.allocatable_npus(node) == NPUS_PER_NODE,
            timeout=60,
        )
    assert out.returncode == 1, out.stdout + out.stderr
    item = _items(out)[node]
    assert not item["passed"]
    assert item["reason"].startswith(
        f"scheduling: {node} has 0 of {NPUS_PER_NODE} NPUs allocatable (none advertised"
    ), item
    _nothing_left(real)


def test_pull_failures_and_timeouts_are_reported(
    clean: Cluster, regsecret: str, resnet50: str
) -> None:
    real = clean
    node = NPU_NODES[0]
    missing = "npu-registry.example.com/demo/no-such-image:1"
    out = kubectl_npu_validate(
        real, "--node", node, "--image", missing, "--timeout", "120", "-o", "json"
    )
    assert out.returncode == 1, out.stdout + out.stderr
    reason = _items(out)[node]["reason"]
    assert reason.startswith("image pull: ") and "not found" in reason, reason

    out = kubectl_npu_validate(real, "--node", node, "--timeout", "8", "-o", "json")
    assert out.returncode == 1, out.stdout + out.stderr
    assert _items(out)[node]["reason"].startswith("timeout: no result after 8s"), out.stdout
    _nothing_left(real)
