"""Prioritize on DRA nodes: their NPUs from the ResourceSlices the driver writes, what the
allocated claims hold, rated by the same engine as device-plugin nodes.

DRA nodes here have 4 NPUs of 32 GiB in two groups (npu-0/1 in group 0, npu-2/3 in 1),
published by ``kubenpu.dra.slices`` itself, so reader and writer are checked together.
"""

from __future__ import annotations

from typing import Any

from extender.fakeapi import node, pod, resource_claim
from extender.test_dra_nodes import dra_node
from kubenpu.adapters.resourceslices import Holding, claim_holdings, slice_devices
from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.dra.slices import resource_slice
from kubenpu.extender.cache import ClusterCache
from kubenpu.extender.core import DRA_SCORE, Extender
from kubenpu.model import Device
from kubenpu.names import DRA_DRIVER

NPUS = [NpuDevice(f"npu-{i}", i, "hanguang-800", 32 * 1024, group=i // 2) for i in range(4)]


def dra_slice(node_name: str, unhealthy: dict[str, str] | None = None) -> dict[str, Any]:
    return resource_slice(DRA_DRIVER, node_name, NPUS, unhealthy or {})


def share_claim(name: str, node_name: str, device: str, percent: int) -> dict[str, Any]:
    claim = resource_claim("default", name, [device], pool=node_name)
    result = claim["status"]["allocation"]["devices"]["results"][0]
    result.update(shareID="s1", consumedCapacity={"compute": str(percent)})
    return claim


def extender(*nodes: dict[str, Any], policy: str = "bestfit") -> Extender:
    ext = Extender(ClusterCache(policy))
    ext.cache.replace_nodes(list(nodes))
    return ext


def scores(ext: Extender, p: dict[str, Any], names: list[str]) -> list[int]:
    return ext.scores({"Pod": p, "NodeNames": names}, names)


def test_slice_devices_reads_back_what_the_driver_writes() -> None:
    node_name, devices = slice_devices(
        dra_slice("d1", {"npu-3": "2026-12-01T00:00:00Z"}), DRA_DRIVER
    )  # type: ignore[misc]
    assert node_name == "d1"
    assert devices == (
        Device("npu-0", 0, "hanguang-800", 32768, True, 0),
        Device("npu-1", 1, "hanguang-800", 32768, True, 0),
        Device("npu-2", 2, "hanguang-800", 32768, True, 1),
        Device("npu-3", 3, "hanguang-800", 32768, False, 1),  # tainted NoSchedule
    )
    other = dra_slice("d1")
    other["spec"]["driver"] = "gpu.example.com"
    assert slice_devices(other, DRA_DRIVER) is None


def test_claim_holdings_whole_devices_and_consumed_compute() -> None:
    whole = resource_claim("default", "w", ["npu-0", "npu-1"], pool="d1")
    assert claim_holdings(whole, DRA_DRIVER) == [
        Holding("d1", "npu-0", 1000),
        Holding("d1", "npu-1", 1000),
    ]
    # 30 percent of one NPU consumed: 300 milli, as aliyun.com/npu-core: 30 counts it.
    assert claim_holdings(share_claim("s", "d1", "npu-2", 30), DRA_DRIVER) == [
        Holding("d1", "npu-2", 300)
    ]
    pending = resource_claim("default", "p", [], allocated=False)
    assert claim_holdings(pending, DRA_DRIVER) == []


def test_prioritize_rates_dra_nodes_from_their_slices_and_claims() -> None:
    # d1 has 3 NPUs free (a claim holds npu-0), d2 all 4: best fit packs a 1-NPU pod onto
    # d1, where the engine's pick gets 10 and d2 less. Before the slices are known both
    # get DRA_SCORE (the engine sees no NPUs there).
    ext = extender(dra_node("d1"), dra_node("d2"))
    one = pod("one", npus=1)
    assert scores(ext, one, ["d1", "d2"]) == [DRA_SCORE, DRA_SCORE]
    ext.cache.replace_slices([dra_slice("d1"), dra_slice("d2")])
    ext.cache.replace_claims([resource_claim("default", "held", ["npu-0"], pool="d1")])
    got = scores(ext, one, ["d1", "d2"])
    assert got[0] == 10 and got[1] < 10
    # The claim gone, the nodes are alike again: the tie goes to the first by name.
    ext.cache.delete_claim("default/held")
    assert ext.cache.state().dev_free[ext.cache.state().node_index["d1"]].tolist() == [1000] * 4


def test_a_shared_device_counts_only_its_consumed_compute() -> None:
    ext = extender(dra_node("d1"))
    ext.cache.replace_slices([dra_slice("d1")])
    ext.cache.upsert_claim(share_claim("a", "d1", "npu-1", 30))
    ext.cache.upsert_claim(share_claim("b", "d1", "npu-1", 40))
    state = ext.cache.state()
    assert state.dev_free[state.node_index["d1"]].tolist() == [1000, 300, 1000, 1000]


def test_a_tainted_device_is_unhealthy_in_place_and_recovers() -> None:
    ext = extender(dra_node("d1"))
    ext.cache.replace_slices([dra_slice("d1")])
    state = ext.cache.state()
    ext.cache.upsert_slice(dra_slice("d1", {"npu-2": "2026-12-01T00:00:00Z"}))
    assert ext.cache.state() is state  # health alone: no rebuild
    i = state.node_index["d1"]
    assert state.dev_healthy[i].tolist() == [True, True, False, True]
    assert state.dev_free[i].tolist() == [1000, 1000, 0, 1000]  # no new claim gets it
    ext.cache.upsert_slice(dra_slice("d1"))
    assert state.dev_healthy[i].tolist() == [True, True, True, True]


def test_device_plugin_and_dra_nodes_are_rated_on_one_scale() -> None:
    # dp: a device-plugin node with 2 NPUs, one held; d1: a DRA node with 4 free. Best fit
    # packs onto dp's last NPU whichever path serves it.
    held = pod("h", npus=1, node_name="dp")
    ext = extender(node("dp", 2), dra_node("d1"))
    ext.cache.upsert_pod(held)
    ext.cache.replace_slices([dra_slice("d1")])
    got = scores(ext, pod("one", npus=1), ["dp", "d1"])
    assert got[0] == 10 and got[1] < 10
