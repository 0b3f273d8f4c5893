"""Preparing claims on the node: CDI spec and checkpoint in step, across restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubenpu.dra.claims import ClaimError
from kubenpu.dra.node import ClaimPreparer

from .conftest import DRIVER, NODE, claim, mock_devices


class Api:
    """The claims the API server holds, by (namespace, name)."""

    def __init__(self) -> None:
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}
        self.reads = 0

    def add(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.claims[(meta["namespace"], meta["name"])] = obj

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        try:
            return self.claims[(namespace, name)]
        except KeyError:
            raise RuntimeError(f"resourceclaims {name!r} not found") from None


def _preparer(tmp_path: Path, api: Api) -> ClaimPreparer:
    backend, devices = mock_devices(4)
    preparer = ClaimPreparer(
        DRIVER,
        NODE,
        backend=backend,
        devices=devices,
        cdi_dir=tmp_path / "cdi",
        checkpoint_file=tmp_path / "plugin" / "checkpoint.json",
        get_claim=api.get,
    )
    preparer.restore()
    return preparer


def test_prepare_writes_spec_and_checkpoint(tmp_path: Path) -> None:
    api = Api()
    api.add(claim(["npu-1", "npu-2"]))
    preparer = _preparer(tmp_path, api)
    prepared = preparer.prepare("uid-1", "default", "c1")
    assert [(d.device, d.cdi_ids) for d in prepared.devices] == [
        ("npu-1", ("k8s.npu.aliyun.com/claim=uid-1-npu-1",)),
        ("npu-2", ("k8s.npu.aliyun.com/claim=uid-1-npu-2",)),
    ]
    spec = json.loads((tmp_path / "cdi" / "npu.aliyun.com-uid-1.json").read_text())
    assert spec["containerEdits"]["env"] == [
        "NPU_VISIBLE_DEVICES=1,2",
        "MOCK_NPU_VISIBLE_DEVICES=1,2",
    ]
    assert spec["devices"][0]["containerEdits"]["deviceNodes"] == [{"path": "/dev/mock-npu1"}]
    # A repeated prepare gives the same answer without asking the API again.
    assert preparer.prepare("uid-1", "default", "c1") == prepared
    assert api.reads == 1
    preparer.unprepare("uid-1")
    assert not list((tmp_path / "cdi").iterdir())
    assert json.loads(preparer.checkpoint_file.read_text())["claims"] == {}
    preparer.unprepare("uid-1")  # again: nothing to do, no error


def test_restart_keeps_prepared_claims_and_removes_leaks(tmp_path: Path) -> None:
    api = Api()
    api.add(claim(["npu-0"]))
    first = _preparer(tmp_path, api)
    prepared = first.prepare("uid-1", "default", "c1")
    spec = tmp_path / "cdi" / "npu.aliyun.com-uid-1.json"
    spec.unlink()  # a crash half-way through an unprepare
    leak = tmp_path / "cdi" / "npu.aliyun.com-uid-9.json"  # ... and through a prepare
    leak.write_text("{}")
    foreign = tmp_path / "cdi" / "nvidia.com-gpu.json"
    foreign.write_text("{}")
    second = _preparer(tmp_path, api)
    assert spec.exists() and not leak.exists() and foreign.exists()
    assert second.prepare("uid-1", "default", "c1") == prepared
    assert api.reads == 1
    # The restarted driver still refuses the device to anyone else.
    api.add(claim(["npu-0"], uid="uid-2", name="c2"))
    with pytest.raises(ClaimError, match=r"npu-0 is already prepared for claim default/c1"):
        second.prepare("uid-2", "default", "c2")
    assert not (tmp_path / "cdi" / "npu.aliyun.com-uid-2.json").exists()


def test_bad_claims_leave_nothing(tmp_path: Path) -> None:
    api = Api()
    api.add(claim(["npu-7"]))
    api.add(claim(["npu-0"], uid="uid-2", name="c2"))
    preparer = _preparer(tmp_path, api)
    with pytest.raises(ClaimError, match=r"device npu-7 is not on node npu-node-1"):
        preparer.prepare("uid-1", "default", "c1")
    with pytest.raises(ClaimError, match=r"cannot read it from the API .*not found"):
        preparer.prepare("uid-3", "default", "missing")
    preparer.set_unhealthy({"npu-0": "marker"})
    with pytest.raises(ClaimError, match=r"npu-0 is unhealthy \(marker\)"):
        preparer.prepare("uid-2", "default", "c2")
    assert not list((tmp_path / "cdi").iterdir())
    assert preparer.claims == {}
    preparer.set_unhealthy({})
    assert preparer.prepare("uid-2", "default", "c2").devices[0].device == "npu-0"


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    api = Api()
    api.add(claim(["npu-0"]))
    _preparer(tmp_path, api).prepare("uid-1", "default", "c1")
    path = tmp_path / "plugin" / "checkpoint.json"
    path.write_text(path.read_text().replace("npu-0", "npu-3"))
    with pytest.raises(Exception, match="checksum mismatch"):
        _preparer(tmp_path, api)


def _share(obj: dict[str, Any], share_id: str, compute: str, memory: str = "0") -> dict[str, Any]:
    """``obj`` with its results made shares, as the allocator writes them on a device that
    allows several allocations (every result gets a shareID and consumedCapacity)."""
    for result in obj["status"]["allocation"]["devices"]["results"]:
        result["shareID"] = share_id
        result["consumedCapacity"] = {"compute": compute, "memory": memory}
    return obj


def _spec(tmp_path: Path, uid: str) -> dict[str, Any]:
    return json.loads((tmp_path / "cdi" / f"npu.aliyun.com-{uid}.json").read_text())


def test_two_30_percent_claims_share_one_device(tmp_path: Path) -> None:
    api = Api()
    api.add(_share(claim(["npu-0"], uid="uid-a", name="a"), "share-a", "30", "4Gi"))
    api.add(_share(claim(["npu-0"], uid="uid-b", name="b"), "share-b", "30"))
    preparer = _preparer(tmp_path, api)
    a = preparer.prepare("uid-a", "default", "a")
    b = preparer.prepare("uid-b", "default", "b")
    # Per-claim, per-share CDI devices: the two shares of npu-0 never collide.
    assert a.devices[0].cdi_ids == ("k8s.npu.aliyun.com/claim=uid-a-npu-0-share-a",)
    assert b.devices[0].cdi_ids == ("k8s.npu.aliyun.com/claim=uid-b-npu-0-share-b",)
    assert (a.devices[0].share_id, a.devices[0].compute, a.devices[0].memory_mib) == (
        "share-a",
        30,
        4096,
    )
    # The device plugin's shared-path env: the compute percent, the memory when asked.
    assert _spec(tmp_path, "uid-a")["containerEdits"]["env"] == [
        "NPU_VISIBLE_DEVICES=0",
        "MOCK_NPU_VISIBLE_DEVICES=0",
        "NPU_CORE_LIMIT=30",
        "NPU_MEM_LIMIT_GIB=4",
    ]
    assert _spec(tmp_path, "uid-b")["containerEdits"]["env"] == [
        "NPU_VISIBLE_DEVICES=0",
        "MOCK_NPU_VISIBLE_DEVICES=0",
        "NPU_CORE_LIMIT=30",
    ]
    assert _spec(tmp_path, "uid-b")["devices"][0]["name"] == "uid-b-npu-0-share-b"
    # 60% is given: a whole device (100) or 50% more does not fit; 40% does.
    api.add(_share(claim(["npu-0"], uid="uid-w", name="w"), "share-w", "100"))
    api.add(_share(claim(["npu-0"], uid="uid-c", name="c"), "share-c", "50"))
    api.add(_share(claim(["npu-0"], uid="uid-d", name="d"), "share-d", "40"))
    with pytest.raises(ClaimError, match=r"npu-0 is already prepared for claim default/a "):
        preparer.prepare("uid-w", "default", "w")
    with pytest.raises(ClaimError, match=r"this claim asks 50% of its compute, 40% is left"):
        preparer.prepare("uid-c", "default", "c")
    assert preparer.prepare("uid-d", "default", "d").devices[0].compute == 40
    assert not (tmp_path / "cdi" / "npu.aliyun.com-uid-c.json").exists()
    # A restart restores the shares with their env, and still counts them.
    preparer.unprepare("uid-d")
    (tmp_path / "cdi" / "npu.aliyun.com-uid-a.json").unlink()
    again = _preparer(tmp_path, api)
    assert _spec(tmp_path, "uid-a")["containerEdits"]["env"][2:] == [
        "NPU_CORE_LIMIT=30",
        "NPU_MEM_LIMIT_GIB=4",
    ]
    assert again.prepare("uid-a", "default", "a") == a
    with pytest.raises(ClaimError, match=r"asks 50% of its compute, 40% is left"):
        again.prepare("uid-c", "default", "c")


def test_a_whole_device_claim_is_exclusive_and_gets_no_share_env(tmp_path: Path) -> None:
    api = Api()
    # A request that asks no compute consumes the whole device (the request policy's default).
    api.add(_share(claim(["npu-1"]), "share-1", "100"))
    api.add(_share(claim(["npu-1"], uid="uid-2", name="c2"), "share-2", "1"))
    preparer = _preparer(tmp_path, api)
    preparer.prepare("uid-1", "default", "c1")
    assert _spec(tmp_path, "uid-1")["containerEdits"]["env"] == [
        "NPU_VISIBLE_DEVICES=1",
        "MOCK_NPU_VISIBLE_DEVICES=1",
    ]
    with pytest.raises(ClaimError, match=r"asks 1% of its compute, 0% is left"):
        preparer.prepare("uid-2", "default", "c2")


def test_shares_of_two_devices_list_one_limit_per_device(tmp_path: Path) -> None:
    api = Api()
    obj = claim(["npu-2", "npu-3"])
    results = obj["status"]["allocation"]["devices"]["results"]
    results[0].update(shareID="s-2", consumedCapacity={"compute": "100", "memory": "0"})
    results[1].update(shareID="s-3", consumedCapacity={"compute": "25", "memory": "2Gi"})
    api.add(obj)
    _preparer(tmp_path, api).prepare("uid-1", "default", "c1")
    assert _spec(tmp_path, "uid-1")["containerEdits"]["env"][2:] == [
        "NPU_CORE_LIMIT=100,25",
        "NPU_MEM_LIMIT_GIB=16,2",
    ]


def test_opaque_config_env_goes_to_its_devices_and_bad_config_leaves_nothing(
    tmp_path: Path,
) -> None:
    api = Api()
    params = {"apiVersion": "npu.aliyun.com/v1", "kind": "NpuConfig", "env": {"LOG": "debug"}}
    config = [{"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters": params}}]
    api.add(claim(["npu-0"], config=config))
    bad = {**params, "env": {"MOCK_NPU_VISIBLE_DEVICES": "3"}}
    bad_config = [{"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters": bad}}]
    api.add(claim(["npu-1"], uid="uid-2", name="c2", config=bad_config))
    preparer = _preparer(tmp_path, api)
    prepared = preparer.prepare("uid-1", "default", "c1")
    assert prepared.devices[0].env == (("LOG", "debug"),)
    assert _spec(tmp_path, "uid-1")["devices"][0]["containerEdits"]["env"] == ["LOG=debug"]
    with pytest.raises(ClaimError, match=r"parameters.env.MOCK_NPU_VISIBLE_DEVICES: set by"):
        preparer.prepare("uid-2", "default", "c2")
    assert sorted(p.name for p in (tmp_path / "cdi").iterdir()) == ["npu.aliyun.com-uid-1.json"]
    assert list(preparer.claims) == ["uid-1"]
    assert "uid-2" not in preparer.checkpoint_file.read_text()


def test_a_failed_checkpoint_write_leaves_no_spec(tmp_path: Path) -> None:
    api = Api()
    api.add(claim(["npu-0"]))
    preparer = _preparer(tmp_path, api)
    # The checkpoint cannot be written (here: its dir is a file; on a node: a full disk).
    preparer.checkpoint_file = tmp_path / "plugin" / "checkpoint.json" / "x"
    with pytest.raises(OSError):
        preparer.prepare("uid-1", "default", "c1")
    assert not list((tmp_path / "cdi").iterdir())
    assert preparer.claims == {}
