"""A dev cluster of the deploy tests' own: the real kube-apiserver that checks the chart.

Separate from tests/e2e's cluster on purpose: these tests register webhooks and CRDs and
install the chart for real, which must not change what the walk-through sees. One small
NPU node and one CPU node are enough (nothing here schedules NPU pods), and the dev
cluster's own webhook stays off: the chart's webhook configurations are what is tested.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.cluster import ApiServer
from kubenpu.devcluster.cluster import ClusterSpec, up


@pytest.fixture(scope="session")
def apiserver() -> Iterator[ApiServer]:
    """The deploy tests' dev cluster with kubectl helpers."""
    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-deploy-"))
    dev = up(
        state_dir,
        ClusterSpec(npu_nodes=1, npus_per_node=2, cpu_nodes=1, node_kind="agent"),
        webhook=False,
    )
    try:
        yield ApiServer(dev)
    finally:
        dev.down()
