"""Backends: devfs and ascend over fake device nodes (links to /dev/null), auto, nvml faked."""

from __future__ import annotations

import os
import stat
import sys
import types
from pathlib import Path

import pytest

from kubenpu.deviceplugin.backends import open_backend
from kubenpu.deviceplugin.backends.ascend import AscendBackend
from kubenpu.deviceplugin.backends.devfs import DevfsBackend
from kubenpu.deviceplugin.backends.mock import MOCK_MAJOR, MockBackend
from kubenpu.deviceplugin.backends.nvml import NvmlBackend
from kubenpu.deviceplugin.config import resolve_config
from kubenpu.deviceplugin.devices import MountSpec
from kubenpu.errors import DeviceError


def fake_nodes(directory: Path, *names: str) -> None:
    """Character 'devices': symlinks to /dev/null (stat follows links)."""
    for name in names:
        os.symlink("/dev/null", directory / name)


def test_devfs_discovers_and_watches_health(tmp_path: Path) -> None:
    fake_nodes(tmp_path, "alinpu0", "alinpu1", "alinpu10", "alinpu_ctl")
    backend = DevfsBackend(str(tmp_path / "alinpu*"), group_size=2)
    devices = backend.discover()
    assert [(d.id, d.index, d.group) for d in devices] == [
        ("alinpu0", 0, 0),
        ("alinpu1", 1, 0),
        ("alinpu10", 10, 5),
    ]
    assert backend.unhealthy(devices) == {}
    (tmp_path / "alinpu1").unlink()
    (tmp_path / "alinpu10").unlink()
    (tmp_path / "alinpu10").write_text("not a device")
    bad = backend.unhealthy(devices)
    assert "missing" in bad["alinpu1"] and "not a character device" in bad["alinpu10"]
    backend.configure(control_devices=[str(tmp_path / "gone_ctl")])
    assert set(backend.unhealthy(devices)) == {"alinpu0", "alinpu1", "alinpu10"}


def test_ascend_adds_management_devices(tmp_path: Path) -> None:
    fake_nodes(tmp_path, "davinci0", "davinci1", "davinci_manager", "hisi_hdc")
    backend = AscendBackend(dev_dir=str(tmp_path))
    devices = backend.discover()
    assert [d.id for d in devices] == ["davinci0", "davinci1"]
    assert backend.env_var == "ASCEND_VISIBLE_DEVICES"
    assert backend.control_devices() == (
        str(tmp_path / "davinci_manager"),
        str(tmp_path / "hisi_hdc"),
    )


def test_auto_picks_the_first_backend_with_devices(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nodes(tmp_path, "alinpu0")
    monkeypatch.setattr(NvmlBackend, "discover", lambda self: [])
    monkeypatch.setattr(AscendBackend, "discover", lambda self: [])
    config = resolve_config({"devfs-glob": str(tmp_path / "alinpu*")}, {})
    caplog.set_level("INFO")
    backend, devices = open_backend(config)
    assert backend.name == "devfs" and len(devices) == 1
    assert "backend auto: picked devfs" in caplog.text
    monkeypatch.setattr(DevfsBackend, "discover", lambda self: [])
    with pytest.raises(DeviceError, match="found no devices"):
        open_backend(config)


def test_mock_spreads_devices_over_numa_nodes(tmp_path: Path) -> None:
    backend = MockBackend(6, health_dir=str(tmp_path), numa_nodes=2)
    devices = backend.discover()
    assert [d.numa_node for d in devices] == [0, 0, 0, 1, 1, 1]
    (tmp_path / "unhealthy-npu-4").touch()
    assert list(backend.unhealthy(devices)) == ["npu-4"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs CAP_MKNOD")
def test_mock_with_a_dev_dir_makes_real_device_nodes(tmp_path: Path) -> None:
    backend, devices = open_backend(
        resolve_config({"backend": "mock", "mock-devices": 2, "mock-dev-dir": str(tmp_path)}, {})
    )
    for i, device in enumerate(devices):
        (path,) = device.paths
        st = os.stat(path)
        assert path == str(tmp_path / f"mock-npu{i}")
        assert stat.S_ISCHR(st.st_mode)
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (MOCK_MAJOR, i)
        # The container sees it where the kubelet stand-in always expected it.
        assert backend.device_node(path) == (path, f"/dev/mock-npu{i}")
    # A stale file in the way is replaced; discovery twice is harmless.
    os.unlink(tmp_path / "mock-npu1")
    (tmp_path / "mock-npu1").write_text("not a device")
    backend.discover()
    assert stat.S_ISCHR(os.stat(tmp_path / "mock-npu1").st_mode)


def test_mock_without_a_dev_dir_names_nodes_that_need_not_exist() -> None:
    backend = MockBackend(1)
    (device,) = backend.discover()
    assert device.paths == ("/dev/mock-npu0",)
    assert backend.device_node("/dev/mock-npu0") == ("/dev/mock-npu0", "/dev/mock-npu0")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("/opt/x", MountSpec("/opt/x", "/opt/x", True)),
        ("/opt/x:/y", MountSpec("/opt/x", "/y", True)),
        ("/opt/x:/y:rw", MountSpec("/opt/x", "/y", False)),
        ("/opt/x:rw", MountSpec("/opt/x", "/opt/x", False)),
    ],
)
def test_mount_parse(text: str, want: MountSpec) -> None:
    assert MountSpec.parse(text) == want


class _FakeNvmlError(Exception):
    pass


class _FakeTimeout(_FakeNvmlError):
    pass


def fake_pynvml(events: list[int]) -> types.ModuleType:
    """Just enough of pynvml: two GPUs, a queue of XID events on GPU 1."""
    nv = types.ModuleType("pynvml")
    nv.NVMLError = _FakeNvmlError
    nv.NVMLError_Timeout = _FakeTimeout
    nv.nvmlEventTypeXidCriticalError = 8
    nv.nvmlInit = lambda: None
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetCount = lambda: 2
    nv.nvmlDeviceGetHandleByIndex = lambda i: i
    nv.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"
    nv.nvmlDeviceGetMinorNumber = lambda h: h
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA H200"
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=141 * 1024**3)
    nv.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=b"00000000:1A:00.0")
    nv.nvmlEventSetCreate = lambda: "set"
    nv.nvmlEventSetFree = lambda s: None
    nv.nvmlDeviceRegisterEvents = lambda h, t, s: None

    def wait(event_set: str, timeout_ms: int) -> types.SimpleNamespace:
        if not events:
            raise _FakeTimeout()
        return types.SimpleNamespace(eventData=events.pop(0), device=1)

    nv.nvmlEventSetWait = wait
    return nv


def test_nvml_discovery_and_critical_xids(monkeypatch: pytest.MonkeyPatch) -> None:
    events = [43, 79]  # 43: an application fault, ignored; 79: GPU fell off the bus
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(events))
    backend = NvmlBackend()
    devices = backend.discover()
    assert [(d.id, d.model, d.memory_mib, d.paths) for d in devices] == [
        ("GPU-0", "nvidia-h200", 141 * 1024, ("/dev/nvidia0",)),
        ("GPU-1", "nvidia-h200", 141 * 1024, ("/dev/nvidia1",)),
    ]
    assert backend.unhealthy(devices) == {"GPU-1": "critical XID 79"}
    assert backend.unhealthy(devices) == {"GPU-1": "critical XID 79"}  # sticky
    assert backend.env_value(devices) == "GPU-0,GPU-1"
    backend.close()


def test_nvml_missing_library_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with pytest.raises(DeviceError, match="nvidia-ml-py"):
        NvmlBackend().discover()
