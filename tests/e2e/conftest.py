"""End-to-end fixtures: one real dev cluster per test session.

The cluster is started by the same code as ``kubenpu dev-cluster up`` (two NPU nodes with
four NPUs each, one node without NPUs) in a temporary state directory, so it never clashes
with a developer's own dev cluster, and stopped at the end of the session.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.support import NPUS_PER_NODE, Cluster, wait_for
from kubenpu.devcluster.cluster import ClusterSpec, up


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A running dev cluster: npu-node-1, npu-node-2 (4 NPUs each) and cpu-node-1."""
    # Directly under the temp dir: unix socket paths inside it must stay under 108 bytes,
    # which pytest's deeper tmp_path does not leave room for. down() removes it.
    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-e2e-"))
    dev = up(
        state_dir,
        ClusterSpec(npu_nodes=2, npus_per_node=NPUS_PER_NODE, cpu_nodes=1, node_kind="agent"),
    )
    try:
        yield Cluster(dev)
    finally:
        dev.down()


@pytest.fixture
def clean(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, left as it was found: no pods, every device healthy, every NPU free."""
    yield cluster
    # A test that failed half-way may have left a node's plugin or agent stopped.
    for status in cluster.dev.status():
        if not status.running:
            cluster.dev.start_process(status.name)
    for node in cluster.dev.npu_nodes:
        for marker in node.health_dir.glob("unhealthy-*"):
            marker.unlink()
    cluster.delete_all_pods()
    for node in cluster.dev.npu_nodes:
        wait_for(
            f"{node.name} allocatable back to {NPUS_PER_NODE}",
            lambda node=node: cluster.allocatable_npus(node.name) == NPUS_PER_NODE,
        )
