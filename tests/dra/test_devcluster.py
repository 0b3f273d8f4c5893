"""The dev cluster's DRA nodes: which nodes, the driver's command line, the DeviceClass."""

from __future__ import annotations

import pytest

from kubenpu.devcluster import cluster
from kubenpu.devcluster.cluster import ClusterSpec, NodeInfo
from kubenpu.dra import deviceclass
from kubenpu.errors import ConfigError


def test_the_last_npu_nodes_are_the_dra_nodes() -> None:
    spec = ClusterSpec(npu_nodes=3, cpu_nodes=1, dra_nodes=2)
    served = [cluster._served_by_dra(spec, i) for i in range(1, 5)]
    assert served == [False, True, True, False]


def test_dra_needs_real_nodes_and_at_most_the_npu_nodes() -> None:
    with pytest.raises(ConfigError, match="--dra needs real nodes"):
        ClusterSpec(node_kind="agent", dra_nodes=1)
    with pytest.raises(ConfigError, match="--dra-nodes 3: between 0 and the NPU nodes"):
        ClusterSpec(npu_nodes=2, dra_nodes=3)


def test_driver_command_line_and_labels() -> None:
    node = NodeInfo("npu-node-2", 4, "/s/nodes/npu-node-2", kind="real", index=2, npu_driver="dra")
    assert node.dra
    argv = cluster.dra_driver_argv(node)
    assert argv[1:2] == ["dra-driver"]
    flags = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert flags == {
        "--driver": "npu.aliyun.com",
        "--node-name": "npu-node-2",
        "--kubeconfig": "/s/nodes/npu-node-2/plugin.kubeconfig",
        "--kubelet-dir": "/s/nodes/npu-node-2/kubelet",
        "--kubelet-own-dir": "/var/lib/kubelet",
        "--cdi-dir": "/s/nodes/npu-node-2/cdi",
        "--backend": "mock",
        "--mock-devices": "4",
        "--mock-health-dir": "/s/nodes/npu-node-2/health",
        "--mock-dev-dir": "/s/nodes/npu-node-2/dev",
    }
    labels = cluster._labels(ClusterSpec(), node)
    assert labels[cluster.LABEL_NPU_DRIVER] == "dra"
    plugin_node = NodeInfo("npu-node-1", 4, "/s/nodes/npu-node-1", kind="real", index=1)
    assert cluster.LABEL_NPU_DRIVER not in cluster._labels(ClusterSpec(), plugin_node)


def test_device_class_maps_the_seeds_resource() -> None:
    klass = deviceclass.device_class("npu.aliyun.com")
    assert klass["metadata"]["name"] == "npu.aliyun.com"
    assert klass["spec"]["extendedResourceName"] == "aliyun.com/npu"
    (selector,) = klass["spec"]["selectors"]
    assert selector["cel"]["expression"] == 'device.driver == "npu.aliyun.com"'
    assert (
        "extendedResourceName"
        not in deviceclass.device_class("x.io", extended_resource=None)["spec"]
    )
    template = deviceclass.claim_template("one-npu", "npu.aliyun.com", count=2)
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    assert request["exactly"]["count"] == 2
