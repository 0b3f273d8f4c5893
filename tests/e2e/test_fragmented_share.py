"""Only kubenpu's filter can see it: the counts fit, no single device does.

Each NPU node gets one 60% share per device, so every device has 40% free: the node's
aliyun.com/npu-core allocatable (400) minus what is requested (240) leaves 160, enough for
another 60% by kube-scheduler's own arithmetic, but a share lives on one device and none
has 60% free. kube-scheduler's resource fit passes both nodes; the extender refuses them,
and the FailedScheduling event must read as the extender wrote it (kube-scheduler formats
the reason as a printf format, so a bare % once came out as "60%!f(MISSING)ree").
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.support import NAMESPACE, NPUS_PER_NODE, Cluster, wait_for
from kubenpu import names

pytestmark = pytest.mark.e2e

NPU_NODES = ("npu-node-1", "npu-node-2")


def _share(name: str, percent: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "npu-registry.example.com/demo/npu-job:1.0",
                    "resources": {"limits": {names.RESOURCE_NPU_CORE: str(percent)}},
                }
            ],
        },
    }


def test_a_fragmented_share_is_refused_with_a_readable_reason(clean: Cluster) -> None:
    cluster = clean
    shares = [f"sixty-{i}" for i in range(len(NPU_NODES) * NPUS_PER_NODE)]
    for name in shares:
        cluster.api.create_namespaced_pod(NAMESPACE, _share(name, 60))
    for name in shares:
        cluster.wait_running(name, timeout=60)
    placed = {
        (p["spec"]["nodeName"], p["metadata"]["annotations"][names.ANNOTATION_DEVICES])
        for p in (cluster.pod(n) for n in shares)
        if p is not None
    }
    assert len(placed) == len(shares)  # one 60% share on every device
    for node in NPU_NODES:
        status = cluster.node(node)["status"]
        assert status["allocatable"][names.RESOURCE_NPU_CORE] == str(100 * NPUS_PER_NODE)

    cluster.api.create_namespaced_pod(NAMESPACE, _share("one-more", 60))
    messages = wait_for(
        "one-more refused by the extender",
        lambda: [m for m in cluster.scheduling_failures("one-more") if "percent" in m],
        timeout=60,
    )
    message = messages[-1]
    assert "no NPU with 60 percent free core" in message, message
    assert "%!" not in message and "MISSING" not in message, message
    pod = cluster.pod("one-more")
    assert pod is not None and not pod["spec"].get("nodeName")
