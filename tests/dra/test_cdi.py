"""CDI specs: one per claim, device nodes per NPU, the claim's env once."""

from __future__ import annotations

import pytest

from kubenpu.deviceplugin.devices import MountSpec
from kubenpu.dra import cdi


def test_claim_spec() -> None:
    devices = [
        cdi.DeviceNodes("npu-1", 1, (("/state/dev/mock-npu1", "/dev/mock-npu1"),)),
        cdi.DeviceNodes("npu-3", 3, (("/dev/alinpu3", "/dev/alinpu3"),)),
    ]
    spec = cdi.claim_spec(
        "npu.aliyun.com",
        "u-1",
        devices,
        env_var="MOCK_NPU_VISIBLE_DEVICES",
        control_devices=[("/dev/alinpu_ctl", "/dev/alinpu_ctl")],
        mounts=[MountSpec("/usr/lib/npu", "/usr/lib/npu")],
    )
    assert spec == {
        "cdiVersion": "0.6.0",
        "kind": "k8s.npu.aliyun.com/claim",
        "devices": [
            {
                "name": "u-1-npu-1",
                "containerEdits": {
                    "deviceNodes": [{"path": "/dev/mock-npu1", "hostPath": "/state/dev/mock-npu1"}]
                },
            },
            {"name": "u-1-npu-3", "containerEdits": {"deviceNodes": [{"path": "/dev/alinpu3"}]}},
        ],
        "containerEdits": {
            "env": ["NPU_VISIBLE_DEVICES=1,3", "MOCK_NPU_VISIBLE_DEVICES=1,3"],
            "deviceNodes": [{"path": "/dev/alinpu_ctl"}],
            "mounts": [
                {
                    "hostPath": "/usr/lib/npu",
                    "containerPath": "/usr/lib/npu",
                    "type": "bind",
                    "options": ["rbind", "ro"],
                }
            ],
        },
    }


def test_ids_and_file_names() -> None:
    assert (
        cdi.cdi_device_id("npu.aliyun.com", "u-1", "npu-0") == "k8s.npu.aliyun.com/claim=u-1-npu-0"
    )
    name = cdi.spec_file_name("npu.aliyun.com", "u-1")
    assert name == "npu.aliyun.com-u-1.json"
    assert cdi.is_own_spec_file("npu.aliyun.com", name)
    assert not cdi.is_own_spec_file("npu.aliyun.com", "nvidia.com-gpu.yaml")
    assert cdi.claim_uid_of("npu.aliyun.com", name) == "u-1"
    with pytest.raises(ValueError, match="not valid"):
        cdi.cdi_device_name("u 1", "npu-0")
