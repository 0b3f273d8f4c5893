"""Fixtures of the console's tests: a store fed with a small cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from console.cluster import Setup, console_cluster
from console.objects import FAILED, cpu_node, event, node, pod
from kubenpu.console.store import ConsoleStore

#: 2026-01-01T00:10:00Z: ten minutes after the pods' creation.
NOW = 1767226200.0


@pytest.fixture
def store() -> ConsoleStore:
    """n1: npu0 whole (a), npu1 shared 60% + 30%; n2: npu3 unhealthy; c1 without NPUs;
    w pending (FailedScheduling event), plus a node event on n1."""
    s = ConsoleStore(clock=lambda: NOW)
    s.replace_nodes([node("n1"), node("n2", unhealthy=(3,)), cpu_node("c1")])
    s.replace_pods(
        [
            pod("a", npus=1, node="n1", devices=("n1-npu0",)),
            pod("s30", core=30, node="n1", devices=("n1-npu1",)),
            pod("s60", core=60, node="n1", devices=("n1-npu1",)),
            pod("w", npus=1),
            pod("plain"),  # asks for no NPU
            pod("done", npus=1, node="n2", devices=("n2-npu0",), phase="Succeeded"),
        ]
    )
    s.replace_events(
        [
            event("e1", "Pod", "w", "FailedScheduling", FAILED, type_="Warning", count=3),
            event("e2", "Node", "n1", "NodeReady", "Node n1 status is now: NodeReady"),
            event(
                "e3",
                "Node",
                "n1",
                "Rebooted",
                "rebooted",
                when="2026-01-01T00:05:00Z",
                type_="Warning",
            ),
            event("e4", "Node", "n2", "NodeReady", "Node n2 status is now: NodeReady"),
        ]
    )
    return s


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    """A dev cluster of its own for each e2e module (one node agent, 4 NPUs) with
    ``kubenpu console --kubeconfig ... --port N`` running on it (console.cluster)."""
    with console_cluster() as running:
        yield running
