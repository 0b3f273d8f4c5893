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
