"""Whole devices follow the scheduler's record; the inventory reaches the plugin's Node."""

from __future__ import annotations

import json

from kubenpu.adapters.kube import devices_from_inventory
from kubenpu.deviceplugin.backends.mock import MockBackend
from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.deviceplugin.inventory import InventoryPublisher
from kubenpu.deviceplugin.manager import ResourceManager
from kubenpu.deviceplugin.sharing import PendingPlacement, PlacementResolver
from kubenpu.names import ANNOTATION_DEVICE_INVENTORY

FULL = 1000


def devices(n: int = 4) -> list[NpuDevice]:
    return [NpuDevice(f"npu-{i}", i, "m", 4096, i // 2, i // 2) for i in range(n)]


def manager(placements: list[PendingPlacement]) -> ResourceManager:
    resolver = PlacementResolver(lambda: placements)
    return ResourceManager("aliyun.com/npu", devices(), MockBackend(0), resolver=resolver)


def pending(name: str, ids: tuple[str, ...], at: str) -> PendingPlacement:
    return PendingPlacement("ns", name, f"uid-{name}", ids, (FULL,) * len(ids), at)


ALL = ["npu-0", "npu-1", "npu-2", "npu-3"]


def test_preferred_whole_returns_the_oldest_pending_placement_of_that_size() -> None:
    # Topology alone would pick npu-0,npu-1 (group 0); the scheduler chose 1 and 2.
    m = manager([pending("b", ("npu-0",), "t2"), pending("a", ("npu-1", "npu-2"), "t1")])
    assert m.preferred(ALL, [], 2) == ["npu-1", "npu-2"]
    # Claimed: the next 2-device request falls back to the topology choice.
    assert sorted(m.preferred(["npu-0", "npu-3"], [], 2)) == ["npu-0", "npu-3"]
    assert m.preferred(ALL, [], 1) == ["npu-0"]


def test_preferred_whole_skips_placements_whose_devices_are_not_available() -> None:
    m = manager([pending("a", ("npu-3",), "t1"), pending("b", ("1",), "t2")])
    # npu-3 is not among the available ids; b's entry is an index and resolves to npu-1.
    assert m.preferred(["npu-0", "npu-1", "npu-2"], [], 1) == ["npu-1"]


def test_preferred_whole_ignores_shares_and_must_include() -> None:
    share = PendingPlacement("ns", "s", "uid-s", ("npu-3",), (500,), "t0")
    m = manager([share])
    assert m.preferred(ALL, [], 1) == ["npu-0"]  # the topology default
    m = manager([pending("a", ("npu-3",), "t1")])
    assert m.preferred(ALL, ["npu-1"], 1) == ["npu-1"]


def test_inventory_publisher_writes_on_change_and_retries_failures() -> None:
    sent: list[dict] = []
    fail = [True]

    def patch(body: dict) -> None:
        if fail[0]:
            raise OSError("connection refused")
        sent.append(body)

    publisher = InventoryPublisher(patch)
    assert not publisher.publish(devices(2), {})
    fail[0] = False
    assert publisher.publish(devices(2), {})
    assert publisher.publish(devices(2), {})  # unchanged: no second patch
    assert publisher.publish(devices(2), {"npu-1": "broken"})
    assert len(sent) == 2
    text = sent[-1]["metadata"]["annotations"][ANNOTATION_DEVICE_INVENTORY]
    assert json.loads(text)[1] == {
        "id": "npu-1",
        "index": 1,
        "model": "m",
        "memory_mib": 4096,
        "group": 0,
        "healthy": False,
    }
    assert [d.healthy for d in devices_from_inventory(text, "n")] == [True, False]
