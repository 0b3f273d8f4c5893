"""The ResourceSlice the driver publishes: one device per NPU, attributes and capacity."""

from __future__ import annotations

from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.dra import slices

from .conftest import DRIVER, NODE, mock_devices


def test_every_npu_is_a_device_with_attributes_and_capacity() -> None:
    _, devices = mock_devices(4)
    since = "2026-12-01T10:00:00Z"
    obj = slices.resource_slice(DRIVER, NODE, devices, {"npu-3": since})
    assert obj["apiVersion"] == "resource.k8s.io/v1"
    assert obj["kind"] == "ResourceSlice"
    assert obj["metadata"]["name"] == "npu-node-1-npu.aliyun.com"
    spec = obj["spec"]
    assert spec["driver"] == DRIVER
    assert spec["nodeName"] == NODE
    assert spec["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    assert [d["name"] for d in spec["devices"]] == ["npu-0", "npu-1", "npu-2", "npu-3"]
    first, last = spec["devices"][0], spec["devices"][3]
    assert first["attributes"] == {
        "model": {"string": "hanguang-800"},
        "index": {"int": 0},
        "group": {"int": 0},
        "numaNode": {"int": 0},
    }
    assert last["attributes"]["group"] == {"int": 1}
    # Consumable capacity: compute 1..100 (a request asking none takes all 100: the whole
    # device), memory in whole GiB (a request asking none takes none).
    assert first["allowMultipleAllocations"] is True
    assert first["capacity"] == {
        "compute": {
            "value": "100",
            "requestPolicy": {
                "default": "100",
                "validRange": {"min": "1", "max": "100", "step": "1"},
            },
        },
        "memory": {
            "value": "16Gi",
            "requestPolicy": {
                "default": "0",
                "validRange": {"min": "0", "max": "16Gi", "step": "1Gi"},
            },
        },
    }
    # The unhealthy device carries the taint, since it failed; the others none.
    assert "taints" not in first
    assert last["taints"] == [
        {"key": "npu.aliyun.com/unhealthy", "effect": "NoSchedule", "timeAdded": since}
    ]


def test_unknown_numa_and_odd_memory() -> None:
    device = NpuDevice("npu-0", 0, model="", memory_mib=1536, numa_node=None)
    entry = slices.device_entry(device)
    assert "numaNode" not in entry["attributes"]
    assert entry["attributes"]["model"] == {"string": "unknown"}
    # 1.5 GiB: asked in whole GiB up to the 1 GiB that fits (the max is a whole step).
    assert entry["capacity"]["memory"] == {
        "value": "1536Mi",
        "requestPolicy": {"default": "0", "validRange": {"min": "0", "max": "1Gi", "step": "1Gi"}},
    }
    small = slices.device_entry(NpuDevice("npu-2", 2, memory_mib=512))
    assert small["capacity"]["memory"]["requestPolicy"]["validRange"] == {"min": "0"}
    assert "memory" not in slices.device_entry(NpuDevice("npu-1", 1))["capacity"]


def test_owner_reference_to_the_node() -> None:
    _, devices = mock_devices(1)
    obj = slices.resource_slice(DRIVER, NODE, devices, {}, owner={"name": NODE, "uid": "u"})
    (ref,) = obj["metadata"]["ownerReferences"]
    assert ref == {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": "u", "controller": True}


def test_same_devices_ignores_what_the_api_adds() -> None:
    _, devices = mock_devices(2)
    desired = slices.resource_slice(DRIVER, NODE, devices, {})
    existing = {**desired, "metadata": {"name": "x", "resourceVersion": "7"}}
    existing["spec"] = {**desired["spec"], "pool": {**desired["spec"]["pool"], "generation": 3}}
    assert slices.same_devices(existing, desired)
    sick = slices.resource_slice(DRIVER, NODE, devices, {"npu-1": "2026-12-01T10:00:00Z"})
    assert not slices.same_devices(existing, sick)


def test_stale_slices_are_only_this_drivers_on_this_node() -> None:
    listed = [
        {
            "metadata": {"name": "npu-node-1-npu.aliyun.com"},
            "spec": {"driver": DRIVER, "nodeName": NODE},
        },
        {"metadata": {"name": "npu-node-1-old"}, "spec": {"driver": DRIVER, "nodeName": NODE}},
        {"metadata": {"name": "gpu"}, "spec": {"driver": "gpu.example.com", "nodeName": NODE}},
        {"metadata": {"name": "other"}, "spec": {"driver": DRIVER, "nodeName": "npu-node-2"}},
    ]
    assert slices.stale_slices(listed, DRIVER, NODE) == ["npu-node-1-old"]
