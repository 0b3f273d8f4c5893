"""Reading a claim's allocation: this driver's devices in this node's pool, or a clear error."""

from __future__ import annotations

import pytest

from kubenpu.dra.claims import AllocatedDevice, ClaimError, allocated_devices

from .conftest import DRIVER, NODE, claim


def test_takes_this_drivers_devices() -> None:
    obj = claim(["npu-1", "npu-2"])
    obj["status"]["allocation"]["devices"]["results"].append(
        {"request": "gpu", "driver": "gpu.example.com", "pool": "x", "device": "gpu-0"}
    )
    assert allocated_devices(obj, DRIVER, NODE, uid="uid-1") == [
        AllocatedDevice("npu", NODE, "npu-1"),
        AllocatedDevice("npu", NODE, "npu-2"),
    ]


def test_not_allocated() -> None:
    with pytest.raises(ClaimError, match=r"claim default/c1 is not allocated"):
        allocated_devices(claim([], allocated=False), DRIVER, NODE)


def test_uid_mismatch_means_another_claim() -> None:
    with pytest.raises(ClaimError, match=r"uid 'uid-1' in the API, the kubelet asked for 'uid-2'"):
        allocated_devices(claim(["npu-0"]), DRIVER, NODE, uid="uid-2")


def test_device_in_another_pool() -> None:
    with pytest.raises(ClaimError, match=r"pool 'npu-node-2', this node serves pool 'npu-node-1'"):
        allocated_devices(claim(["npu-0"], pool="npu-node-2"), DRIVER, NODE)


def test_opaque_parameters_for_this_driver_are_refused() -> None:
    config = [
        {"source": "FromClass", "opaque": {"driver": DRIVER, "parameters": {"kind": "Weird"}}},
    ]
    with pytest.raises(ClaimError, match=r"config 0 \(FromClass\) gives npu.aliyun.com opaque"):
        allocated_devices(claim(["npu-0"], config=config), DRIVER, NODE)


def test_other_drivers_config_and_empty_parameters_are_fine() -> None:
    config = [
        {"source": "FromClaim", "opaque": {"driver": "gpu.example.com", "parameters": {"a": 1}}},
        {"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters": {}}},
    ]
    assert len(allocated_devices(claim(["npu-0"], config=config), DRIVER, NODE)) == 1


def test_malformed_results() -> None:
    obj = claim(["npu-0"])
    obj["status"]["allocation"]["devices"]["results"][0]["device"] = ""
    with pytest.raises(ClaimError, match="needs a device and a request name"):
        allocated_devices(obj, DRIVER, NODE)
    obj["status"]["allocation"]["devices"]["config"] = {"not": "a list"}
    with pytest.raises(ClaimError, match="config is not a list"):
        allocated_devices(obj, DRIVER, NODE)
