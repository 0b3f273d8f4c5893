"""Reading a claim's allocation: this driver's devices in this node's pool, or a clear error."""

from __future__ import annotations

from typing import Any

import pytest

from kubenpu.dra.claims import (
    AllocatedDevice,
    ClaimError,
    NpuConfig,
    allocated_devices,
    claim_configs,
    config_env,
)

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


def _opaque(parameters: object, source: str = "FromClass", **entry: object) -> list[dict[str, Any]]:
    return [{"source": source, "opaque": {"driver": DRIVER, "parameters": parameters}, **entry}]


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        # Not this schema at all: the field or value is named, with what is read instead.
        ({"kind": "Weird"}, r"parameters.apiVersion: None is not this driver's API; "),
        (
            {"apiVersion": "npu.aliyun.com/v2", "kind": "NpuConfig"},
            r"parameters.apiVersion: 'npu.aliyun.com/v2' is an unknown version; this "
            r"driver reads npu.aliyun.com/v1",
        ),
        (
            {"apiVersion": "gpu.example.com/v1", "kind": "NpuConfig"},
            r"'gpu.example.com/v1' is not this driver's API",
        ),
        (
            {"apiVersion": "npu.aliyun.com/v1", "kind": "GpuConfig"},
            r"parameters.kind: 'GpuConfig' is not a kind this driver reads \(NpuConfig\)",
        ),
        (
            {"apiVersion": "npu.aliyun.com/v1", "kind": "NpuConfig", "cores": 2},
            r"parameters.cores: unknown field \(NpuConfig has apiVersion, kind, env\)",
        ),
        (
            {"apiVersion": "npu.aliyun.com/v1", "kind": "NpuConfig", "env": ["A=1"]},
            r"parameters.env must be an object of name: value",
        ),
        (
            {"apiVersion": "npu.aliyun.com/v1", "kind": "NpuConfig", "env": {"1A": "x"}},
            r"parameters.env.1A: not an environment variable name",
        ),
        (
            {"apiVersion": "npu.aliyun.com/v1", "kind": "NpuConfig", "env": {"A": 1}},
            r"parameters.env.A: the value must be a string, got 1",
        ),
        ("just text", r"parameters must be an object \(apiVersion: npu.aliyun.com/v1"),
    ],
)
def test_malformed_opaque_parameters_are_refused_naming_the_field(
    parameters: object, message: str
) -> None:
    with pytest.raises(ClaimError, match=r"claim default/c1: config 0 \(FromClass\) for "):
        allocated_devices(claim(["npu-0"], config=_opaque(parameters)), DRIVER, NODE)
    with pytest.raises(ClaimError, match=message):
        allocated_devices(claim(["npu-0"], config=_opaque(parameters)), DRIVER, NODE)


def test_npu_config_env_per_request_and_reserved_names() -> None:
    good = {"apiVersion": "npu.aliyun.com/v1", "kind": "NpuConfig", "env": {"LOG": "debug"}}
    later = {"apiVersion": "npu.aliyun.com/v1", "kind": "NpuConfig", "env": {"LOG": "info"}}
    obj = claim(
        ["npu-0"],
        config=_opaque(good) + _opaque(later, "FromClaim", requests=["npu"]),
    )
    configs = claim_configs(obj, DRIVER)
    assert configs == [
        NpuConfig((), (("LOG", "debug"),)),
        NpuConfig(("npu",), (("LOG", "info"),)),
    ]
    assert config_env(configs, "npu") == (("LOG", "info"),)  # the claim's, after the class's
    assert config_env(configs, "other") == (("LOG", "debug"),)
    assert config_env(configs, "npu/small") == (("LOG", "info"),)  # a subrequest of npu
    reserved = {**good, "env": {"NPU_CORE_LIMIT": "100"}}
    with pytest.raises(ClaimError, match=r"parameters.env.NPU_CORE_LIMIT: set by the driver"):
        claim_configs(
            claim(["npu-0"], config=_opaque(reserved)), DRIVER, reserved_env=["NPU_CORE_LIMIT"]
        )


def test_shares_carry_their_share_id_and_consumed_capacity() -> None:
    obj = claim(["npu-0"])
    (result,) = obj["status"]["allocation"]["devices"]["results"]
    result["shareID"] = "s-1"
    result["consumedCapacity"] = {"memory": "4Gi", "compute": "30"}
    (device,) = allocated_devices(obj, DRIVER, NODE)
    assert device.share_id == "s-1"
    assert device.consumed == (("compute", "30"), ("memory", "4Gi"))


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
